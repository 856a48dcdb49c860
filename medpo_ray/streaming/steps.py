"""A training step's accounting, without Ray: which prompts it issued, which became examples, which were
dropped and why, and how many more prompts it needs.

A step trains exactly `size` preference pairs. Every prompt issued for it is, at any time, pending (at a
stage or in a queue), an example waiting for the learner, or dropped with a stage-qualified reason code
("editor:abstain", "corruption:y_plus"). A drop at any stage, including the learner's collation check
that the corruption stage runs on each pair, leaves a hole that `need()` reports and the driver fills
with a fresh prompt (top-up), until the step holds its `size` examples or has spent `max_prompts_per_pair` prompts per pair (then the critic or the
data is broken, and the run stops naming the rejections).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from medpo_ray.config import Config
from medpo_ray.errors import MedpoError
from medpo_ray.streaming.outcome import StageOutcome


class StepUnfillable(MedpoError):
    """A step spent its prompt budget without filling (the critic or the data rejects almost everything)."""


def check_records(cfg: Config, records: dict) -> None:
    """A training split that cannot fill one step is a clear error before any actor starts."""
    if len(records) < cfg.train.batch_size:
        raise MedpoError(f"the training split of {cfg.data.path!r} has {len(records)} usable records, fewer "
                         f"than train.batch_size={cfg.train.batch_size}: lower the batch size or add data")
    if cfg.rollout.n != 1:
        raise MedpoError("rollout.n must be 1 for training: the paper builds one pair per prompt from "
                         "the greedy answer (n > 1 is for evaluation and benchmarks)")


@dataclass
class StepBatch:
    """One training step: the prompts issued for it and what they have become so far."""

    step: int
    size: int  # pairs the step trains (train.batch_size)
    issued: list[str] = field(default_factory=list)
    examples: dict[str, Any] = field(default_factory=dict)  # id -> handle of its example (payload, index)
    versions: dict[str, int] = field(default_factory=dict)  # id -> policy version that wrote its answer
    kinds: dict[str, str] = field(default_factory=dict)  # id -> "A:<edit kinds>" or "B:<counterfactual>"
    offered: Counter = field(default_factory=Counter)  # counterfactual keys the critic chose for its prompts
    probe: tuple | None = None  # (rollout payload, records) of one chunk, for the log-prob check
    dropped: dict[str, str] = field(default_factory=dict)  # id -> "stage:code" of every drop
    audit: list[dict] = field(default_factory=list)  # the editor's audit rows of this step's answers

    @property
    def pending(self) -> int:
        """Prompts issued that are neither an example nor dropped (at a stage or in a queue)."""
        return len(self.issued) - len(self.examples) - len(self.dropped)

    @property
    def rejections(self) -> Counter:
        """Prompts dropped, by "stage:code"."""
        return Counter(self.dropped.values())

    def need(self) -> int:
        """Prompts to issue now so that pending prompts and examples cover the step."""
        return max(0, self.size - len(self.examples) - self.pending)

    def complete(self) -> bool:
        """The step holds its `size` examples."""
        return len(self.examples) >= self.size

    def budget_left(self, max_prompts_per_pair: int) -> int:
        """Prompts the step may still issue before it counts as unfillable."""
        return max_prompts_per_pair * self.size - len(self.issued)

    def check_budget(self, n: int, max_prompts_per_pair: int) -> None:
        """Raise if issuing `n` more prompts would exceed the step's prompt budget."""
        if n > self.budget_left(max_prompts_per_pair):
            raise StepUnfillable(
                f"step {self.step}: {len(self.issued)} prompts gave only {len(self.examples)} valid pairs "
                f"(rejections: {dict(self.rejections)}); the critic rejects almost everything: check the critic "
                "configuration and the policy's outputs (train.max_prompts_per_pair bounds the prompts a pair may take)")

    def issue(self, ids: list[str]) -> None:
        """Prompts handed to the pipeline for this step."""
        self.issued += ids

    def settle(self, outcome: StageOutcome, asked: list[str]) -> tuple[list[str], dict[str, str]]:
        """Account for a stage's answer on the ids it was `asked`: returns (kept ids in payload order, dropped
        id -> "stage:code"). An asked id the stage returned neither way is dropped as "missing" rather than
        left to stall the step; an id the stage was not asked about is ignored."""
        asked_set = set(asked)
        kept = [k for k in outcome.kept if k in asked_set]
        kept_set = set(kept)
        dropped = {k: f"{outcome.stage}:{StageOutcome.code(outcome.dropped.get(k, 'missing'))}"
                   for k in asked if k not in kept_set}
        self.drop(dropped)
        self.versions.update((k, v) for k, v in outcome.versions.items() if k in kept_set)
        self.kinds.update((k, v) for k, v in outcome.kinds.items() if k in kept_set)
        self.offered.update(outcome.offered)
        self.audit += outcome.audit
        return kept, dropped

    def stale(self, ids: list[str], max_staleness: int) -> dict[str, str]:
        """Ids whose answer was written more than `max_staleness` versions before the policy this step trains
        (bounded-async mode); the caller drops them with `drop`."""
        return {k: "staleness:stale" for k in ids if self.step - self.versions.get(k, self.step) > max_staleness}

    def drop(self, dropped: dict[str, str]) -> None:
        """Pending prompts that leave the step, by stage-qualified reason code."""
        self.dropped.update(dropped)

    def add_examples(self, ids: list[str], payload: Any) -> None:
        """Examples made by the last stage: (payload handle, index) each, no longer pending."""
        self.examples.update((k, (payload, i)) for i, k in enumerate(ids))

    def staleness(self, ids: list[str]) -> list[int]:
        """Policy versions between each id's answer and the policy this step trains."""
        return [self.step - self.versions.get(k, self.step) for k in ids]
