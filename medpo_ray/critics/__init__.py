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
    if cfg.backend == "gold":
        from medpo_ray.critics.gold import GoldCritic

        return GoldCritic()
    from medpo_ray.critics.reference import ReferenceCritic

    return ReferenceCritic(cfg.measurement_tolerance_mm, cfg.max_changed_words_per_sentence, keep_rates)


def reference_offer_totals(cfg: CriticConfig, records: Iterable[Record], max_records: int = 6000
                           ) -> dict[str, float] | None:
    """How often the reference critic would use each counterfactual key on these (training) records' gold
    answers (critics/balance.py): the prior of its keep rates; None for a backend that writes its own
    counterfactuals. At most `max_records`, the same ones in every process (by a stable hash of the id)."""
    if cfg.backend != "reference":
        return None
    from medpo_ray.critics import balance
    from medpo_ray.critics.reference import ReferenceCritic, stable_hash

    critic = ReferenceCritic(cfg.measurement_tolerance_mm, cfg.max_changed_words_per_sentence)
    sample = sorted(records, key=lambda r: stable_hash(r.record_id))[:max_records]
    return balance.total_use(balance.expected_use(keys) for r in sample if (keys := critic.counterfactual_keys(r)))


def reference_keep_rates(cfg: CriticConfig, records: Iterable[Record], max_records: int = 6000
                         ) -> dict[str, float] | None:
    """Keep rates that balance the reference critic's counterfactuals over the records' gold answers."""
    from medpo_ray.critics import balance

    totals = reference_offer_totals(cfg, records, max_records)
    return None if totals is None else balance.keep_from_totals(totals)


__all__ = ["Critic", "CriticVerdict", "Edit", "make_critic", "reference_keep_rates", "reference_offer_totals"]
