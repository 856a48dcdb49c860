"""FiRe-MPO and its presets as pure functions over tensors (shared/design/LOSS.md); no Ray, no models."""
from medpo_ray.losses.batch import (
    ALL_PAIRS,
    PAIRS,
    PairExample,
    PreferenceBatch,
    build_preference_batch,
    chat_prompt_ids,
    needed_pairs,
)
from medpo_ray.losses.checks import LossInputError
from medpo_ray.losses.fire_mpo import fire_mpo_loss, fire_mpo_loss_from_logps, kl_per_example
from medpo_ray.losses.kl import token_kl
from medpo_ray.losses.logprobs import token_logprobs

__all__ = [
    "ALL_PAIRS", "PAIRS", "LossInputError", "PairExample", "PreferenceBatch", "build_preference_batch",
    "chat_prompt_ids", "fire_mpo_loss", "fire_mpo_loss_from_logps", "kl_per_example", "needed_pairs",
    "token_kl", "token_logprobs",
]
