"""AdamW and the learning-rate schedule (cosine or constant, both with linear warmup)."""
from __future__ import annotations

import functools
import math
from collections.abc import Iterable

from medpo_ray.config import TrainConfig


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based), as transformers defines it."""
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def build_optimizer(params: Iterable, train: TrainConfig):
    """torch AdamW over the trainable parameters."""
    import torch

    return torch.optim.AdamW(list(params), lr=train.lr, betas=tuple(train.adam_betas), eps=train.adam_eps,
                             weight_decay=train.weight_decay)


def build_scheduler(optimizer, train: TrainConfig):
    """LambdaLR over `train.steps` optimizer steps; its state dict holds only numbers (checkpoint-safe)."""
    import torch

    # A partial, not a closure: LambdaLR saves a partial's (empty) __dict__, and nothing else, in state_dict.
    fn = functools.partial(lr_factor, warmup=train.warmup_steps, total=train.steps, schedule=train.lr_schedule)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
