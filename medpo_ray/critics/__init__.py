"""Critics: judge a policy answer against the record and propose minimal span edits."""
from __future__ import annotations

from medpo_ray.config import CriticConfig
from medpo_ray.critics.base import Critic, CriticVerdict, Edit


def make_critic(cfg: CriticConfig) -> Critic:
    """The critic backend named by `cfg.backend` (reference rules or an OpenAI-compatible endpoint)."""
    if cfg.backend == "openai":
        from medpo_ray.critics.openai_critic import OpenAICritic

        return OpenAICritic(cfg)
    from medpo_ray.critics.reference import ReferenceCritic

    return ReferenceCritic(cfg.measurement_tolerance_mm, cfg.max_changed_words_per_sentence)


__all__ = ["Critic", "CriticVerdict", "Edit", "make_critic"]
