"""DeepSpeed configuration from the `train` section: batch layout, ZeRO stage, precision, clipping."""
from __future__ import annotations

from medpo_ray.config import TrainConfig
from medpo_ray.errors import MedpoError

# DeepSpeed prints a line every `steps_per_print` steps; the learner reports its own metrics instead.
_QUIET = 1 << 30


def grad_accumulation_steps(train: TrainConfig, world_size: int) -> int:
    """Micro-batches per rank per optimizer step, so that world_size x micro_batch x steps = batch_size."""
    per_pass = world_size * train.micro_batch
    if world_size < 1 or train.batch_size % per_pass:
        raise MedpoError(f"train.batch_size ({train.batch_size}) is not a multiple of world size ({world_size}) "
                         f"x train.micro_batch ({train.micro_batch})")
    return train.batch_size // per_pass


def build_ds_config(train: TrainConfig, world_size: int) -> dict:
    """The DeepSpeed config of the policy engine for `world_size` data-parallel ranks."""
    cfg = {
        "train_batch_size": train.batch_size,
        "train_micro_batch_size_per_gpu": train.micro_batch,
        "gradient_accumulation_steps": grad_accumulation_steps(train, world_size),
        "gradient_clipping": train.grad_clip,
        "zero_optimization": {"stage": train.zero_stage},
        "bf16": {"enabled": train.bf16},
        # The client optimizer is torch's AdamW; DeepSpeed only certifies its own with ZeRO.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": _QUIET,
        "wall_clock_breakdown": False,
    }
    if train.bf16:
        # Accumulating micro-batch gradients in bf16 loses the small ones; keep the sum in fp32.
        cfg["data_types"] = {"grad_accum_dtype": "fp32"}
    return cfg


def reference_ds_config(train: TrainConfig) -> dict:
    """Config of the frozen reference engine (ZeRO-3 inference: parameters sharded, no optimizer)."""
    return {
        "train_micro_batch_size_per_gpu": train.micro_batch,
        "zero_optimization": {"stage": 3},
        "bf16": {"enabled": train.bf16},
        "steps_per_print": _QUIET,
    }
