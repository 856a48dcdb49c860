"""SpanEditor: the span-editor stage, a critic and a PairBuilder in a Ray actor."""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

import ray

from actors import metrics
from medpo_ray.config import CriticConfig
from medpo_ray.critics import AnswerVocabulary, make_critic
from medpo_ray.data.record import Record
from medpo_ray.editing.pairs import PairBuilder, PairLimits, PreferencePair
from medpo_ray.streaming.outcome import StageOutcome


@ray.remote
class SpanEditor:
    """Judges policy answers with the configured critic and builds validated minimal-edit pairs.

    Stage methods return (StageOutcome, payload): pairs kept with their policy versions and kinds,
    rejections dropped with their reason; the payload is the list of PreferencePair.
    """

    def __init__(self, critic_cfg: CriticConfig, limits: PairLimits | None = None,
                 tokenizer_dir: str | None = None, keep_rates: dict[str, float] | None = None,
                 vocab: AnswerVocabulary | None = None):
        tokenizer = None
        if tokenizer_dir:
            from transformers import AutoTokenizer

            # With the training tokenizer, a pair whose spans cover no token is rejected here, not in training.
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        self.critic = make_critic(critic_cfg, keep_rates, vocab)
        self.backend = critic_cfg.backend
        if critic_cfg.backend == "gold" and limits is None:
            # The static-reference baseline pairs the whole reference with the whole answer: the minimal-edit
            # filters (share of words edited, similarity) would refuse it by design.
            limits = PairLimits(max_edit_fraction=1.0, min_similarity=0.0)
        self.builder = PairBuilder(limits, tokenizer)

    def edit(self, records: Sequence[Record], answers: Sequence[str], policy_version: int | Sequence[int]
             ) -> tuple[StageOutcome, list[PreferencePair]]:
        """Review each (record, answer) and build its pair or a counted rejection."""
        t0 = time.perf_counter()
        verdicts = self.critic.review_many(list(zip(records, answers, strict=True)))
        batch = self.builder.build_batch(records, answers, verdicts, policy_version)
        for v in verdicts:
            metrics.observe("medpo_critic_seconds", v.seconds, backend=self.backend)
        for key, n in batch.counts().items():
            if key.startswith("pairs_"):
                metrics.inc("medpo_pairs_total", n, branch=key.removeprefix("pairs_"))
            else:
                metrics.inc("medpo_critic_errors_total", n, reason=key)
        # Counterfactuals the critic chose before thinning (kept or dropped for balance): the driver refits
        # the keep rates on them (critics/balance.py), since the policy's right answers drift from the data's.
        offered = Counter(v.counterfactual for v in verdicts if v.counterfactual)
        return batch.outcome(time.perf_counter() - t0, offered), batch.pairs

    def edit_rollouts(self, records: Sequence[Record], result) -> tuple[StageOutcome, list[PreferencePair]]:
        """`edit` over a rollout stage's GenerateResult: each completion goes with its record by id."""
        by_id = {r.record_id: r for r in records}
        done = [ro for ro in result.rollouts if ro.record_id in by_id]
        return self.edit([by_id[ro.record_id] for ro in done], [ro.text for ro in done],
                         [ro.policy_version for ro in done])

    def set_keep_rates(self, keep_rates: dict[str, float] | None) -> None:
        """Replace the critic's counterfactual keep rates (reference critic only; others have none)."""
        if hasattr(self.critic, "set_keep_rates"):
            self.critic.set_keep_rates(keep_rates)

    def counts(self) -> dict[str, int]:
        """Pairs per branch and rejections per reason since the actor started."""
        return dict(self.builder.counts)
