"""The small interface every critic implements (embedded reference rules, or an LLM over HTTP)."""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

from medpo_ray.data.record import Record
from medpo_ray.labeler import Span

Verdict = Literal["wrong", "right", "abstain"]


@dataclass(frozen=True)
class Edit:
    """Replace `old` (text that must occur in y0) by `new`.

    `start` is the character offset of `old` in y0 when the critic knows it (rule critics do); LLM
    critics leave it None and the pair builder requires `old` to occur in y0 exactly once.
    """

    old: str
    new: str
    start: int | None = None
    kind: str = ""  # laterality | presence | size | count | measurement | organ | other


@dataclass(frozen=True)
class CriticVerdict:
    """What a critic says about y0.

    wrong   -> branch A: the edits correct y0 (y- = y0, y+ = edited).
    right   -> branch B: the edits make a minimal counterfactual (y+ = y0, y- = edited).
    abstain -> no pair; `reason` says why (unparseable text, timeout, garbage answer, ...).
    """

    verdict: Verdict
    edits: tuple[Edit, ...] = ()
    critic: str = ""
    reason: str = ""
    raw: str = ""  # the critic's raw output, truncated, for audit
    counterfactual: str = ""  # branch B from a rule critic: the swap's balance key ("presence:no>a")
    seconds: float = 0.0  # how long the review took (review_timed), for medpo_critic_seconds and the audit


def swap(span: Span, new: str, kind: str) -> Edit:
    """Replace the word at `span` (a labeler span) by `new`, keeping a capital first letter."""
    if span.text[:1].isupper():
        new = new[:1].upper() + new[1:]
    return Edit(span.text, new, span.start, kind)


def embedded(record: Record) -> bool:
    """Whether the record carries the embedded data's structured lesions (else its text is the truth)."""
    return bool(record.findings) and "lesions" in record.findings


class Critic(ABC):
    """Judges policy answers; never raises for bad answers or transport failures (it abstains)."""

    name: ClassVar[str]

    @abstractmethod
    def review(self, record: Record, y0: str) -> CriticVerdict:
        """Judge one answer."""

    def review_timed(self, record: Record, y0: str) -> CriticVerdict:
        """`review`, with the time it took in the verdict's `seconds`."""
        t0 = time.perf_counter()
        verdict = self.review(record, y0)
        return replace(verdict, seconds=time.perf_counter() - t0)

    def review_many(self, items: Sequence[tuple[Record, str]]) -> list[CriticVerdict]:
        """Judge many answers, each timed; backends with network latency override this to run concurrently."""
        return [self.review_timed(r, y) for r, y in items]
