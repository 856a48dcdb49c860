"""Critics: judge a policy answer against the record and propose minimal span edits."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from medpo_ray.config import CriticConfig
from medpo_ray.critics.base import Critic, CriticVerdict, Edit
from medpo_ray.data.record import Record


def make_critic(cfg: CriticConfig, keep_rates: Mapping[str, float] | None = None) -> Critic:
    """The critic backend named by `cfg.backend` (reference rules or an OpenAI-compatible endpoint);
    `keep_rates` balance the reference critic's counterfactuals (reference_keep_rates)."""
    if cfg.backend == "openai":
        from medpo_ray.critics.openai_critic import OpenAICritic

        return OpenAICritic(cfg)
    from medpo_ray.critics.reference import ReferenceCritic

    return ReferenceCritic(cfg.measurement_tolerance_mm, cfg.max_changed_words_per_sentence, keep_rates)


def reference_keep_rates(cfg: CriticConfig, records: Iterable[Record], max_records: int = 6000
                         ) -> dict[str, float] | None:
    """Keep rates that balance the reference critic's counterfactuals over these (training) records' gold
    answers (critics/balance.py); None for a backend that writes its own counterfactuals. At most
    `max_records`, the same ones in every process (chosen by a stable hash of the record id)."""
    if cfg.backend != "reference":
        return None
    from medpo_ray.critics import balance
    from medpo_ray.critics.reference import ReferenceCritic, stable_hash

    critic = ReferenceCritic(cfg.measurement_tolerance_mm, cfg.max_changed_words_per_sentence)
    sample = sorted(records, key=lambda r: stable_hash(r.record_id))[:max_records]
    return balance.fit_keep_rates(balance.expected_use(keys) for r in sample
                                  if (keys := critic.counterfactual_keys(r)))


__all__ = ["Critic", "CriticVerdict", "Edit", "make_critic", "reference_keep_rates"]
