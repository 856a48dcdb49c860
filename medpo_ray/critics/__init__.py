"""Critics: judge a policy answer against the record and propose minimal span edits."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from medpo_ray.config import Config, CriticConfig
from medpo_ray.critics import balance
from medpo_ray.critics.base import Critic, CriticVerdict, Edit
from medpo_ray.critics.vqa_answers import AnswerVocabulary
from medpo_ray.data.record import Record


def make_critic(cfg: CriticConfig, keep_rates: Mapping[str, float] | None = None,
                vocab: AnswerVocabulary | None = None) -> Critic:
    """The critic backend named by `cfg.backend` (reference rules or an OpenAI-compatible endpoint);
    `keep_rates` balance the reference critic's counterfactuals (reference_keep_rates), `vocab` gives it
    the training split's answers to real VQA questions (answer_vocabulary)."""
    if cfg.backend == "openai":
        from medpo_ray.critics.openai_critic import OpenAICritic

        return OpenAICritic(cfg)
    if cfg.backend == "gold":
        from medpo_ray.critics.gold import GoldCritic

        return GoldCritic()
    from medpo_ray.critics.reference import ReferenceCritic

    return ReferenceCritic(cfg.measurement_tolerance_mm, cfg.max_changed_words_per_sentence, keep_rates, vocab)


def answer_vocabulary(cfg: CriticConfig, records: Iterable[Record]) -> AnswerVocabulary | None:
    """The reference critic's answers per question type, from the training split's real VQA records
    (critics/vqa_answers.py); None for other backends."""
    if cfg.backend != "reference":
        return None
    return AnswerVocabulary.from_records(records, cfg.vqa_answer_choices)


def reference_offer_totals(cfg: CriticConfig, records: Iterable[Record], max_records: int = 6000,
                           vocab: AnswerVocabulary | None = None) -> dict[str, float] | None:
    """How often the reference critic would use each counterfactual key on these (training) records' gold
    answers (critics/balance.py): the prior of its keep rates; None for a backend that writes its own
    counterfactuals. At most `max_records`, the same ones in every process (by a stable hash of the id)."""
    if cfg.backend != "reference":
        return None
    from medpo_ray.critics.reference import ReferenceCritic, stable_hash

    critic = ReferenceCritic(cfg.measurement_tolerance_mm, cfg.max_changed_words_per_sentence, vocab=vocab)
    sample = sorted(records, key=lambda r: stable_hash(r.record_id))[:max_records]
    return balance.total_use(balance.expected_use(keys) for r in sample if (keys := critic.counterfactual_keys(r)))


def reference_keep_rates(cfg: CriticConfig, records: Iterable[Record], max_records: int = 6000,
                         vocab: AnswerVocabulary | None = None) -> dict[str, float] | None:
    """Keep rates that balance the reference critic's counterfactuals over the records' gold answers."""
    totals = reference_offer_totals(cfg, records, max_records, vocab)
    return None if totals is None else balance.keep_from_totals(totals)


def counterfactual_balance(cfg: Config, records: dict, vocab: AnswerVocabulary | None = None
                           ) -> balance.OnPolicyBalance | None:
    """The reference critic's counterfactual balance, its prior fitted on this training split's gold answers
    (critics/balance.py; the prior's rates are written to the run directory); None for other critics."""
    import json
    from pathlib import Path

    totals = reference_offer_totals(cfg.critic, records.values(), vocab=vocab)
    if totals is None:
        return None
    fitted = balance.OnPolicyBalance(totals)
    keep = fitted.rates()
    out = Path(cfg.run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "counterfactual_balance.json").write_text(json.dumps(keep, indent=1))
    if vocab is not None and vocab.answers:  # what the critic may swap a real VQA answer for
        (out / "answer_vocabulary.json").write_text(json.dumps(vocab.to_json(), indent=1))
    print(f"[critic] counterfactual keep rates fitted on {len(records)} training records' gold answers, "
          f"refitted on-policy after each step; {sum(v < 1 for v in keep.values())} of {len(keep)} swaps thinned")
    return fitted




def preflight(cfg: CriticConfig) -> str | None:
    """Check a remote critic answers before a run starts (critics/openai_critic.py); the model it will use,
    or None for an embedded critic (nothing to reach). Raises MedpoError naming the problem."""
    if cfg.backend != "openai":
        return None
    from medpo_ray.critics.openai_critic import OpenAICritic

    critic = OpenAICritic(cfg)
    try:
        return critic.preflight()
    finally:
        critic.close()


__all__ = ["AnswerVocabulary", "Critic", "CriticVerdict", "Edit", "answer_vocabulary", "counterfactual_balance", "make_critic", "preflight",
           "reference_keep_rates", "reference_offer_totals"]
