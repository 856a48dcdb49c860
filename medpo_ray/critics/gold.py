"""The "gold" critic: the dataset's reference answer is y+ whenever the policy's answer differs from it.

This is the static-reference setting the FiRe-MPO paper argues against (offline DPO with the reference
report as the preferred answer and the model's own answer as the rejected one): the pair differs
wherever the wording differs, paraphrases included, not only in the clinically wrong words. It exists
as a baseline (`critic.backend: gold`, medpo-ray ablate), never as a critic to align with.
"""
from __future__ import annotations

from medpo_ray.critics.answer import abstain
from medpo_ray.critics.base import Critic, CriticVerdict, Edit
from medpo_ray.data.record import Record
from medpo_ray.eval.structured import normalize_answer


class GoldCritic(Critic):
    """y0 differs from record.target -> "wrong" with one edit replacing all of y0 by the target."""

    name = "gold"

    def review(self, record: Record, y0: str) -> CriticVerdict:
        """Judge one answer against the reference text."""
        if not isinstance(y0, str) or not y0.strip():
            return abstain("empty", "y0 is blank", self.name)
        if normalize_answer(y0) == normalize_answer(record.target):
            return abstain("no_counterfactual", "y0 is the reference answer", self.name)
        return CriticVerdict("wrong", (Edit(y0, record.target, 0, "reference"),), self.name, "differs from the reference")
