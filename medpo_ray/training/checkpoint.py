"""Learner checkpoints that resume a run exactly, written and read without unpickling anything.

Layout of a checkpoint directory (on storage every rank can reach):
    model/               full fine-tune: HF save_pretrained (safetensors) + processor files
    adapter/             LoRA: peft save_pretrained (adapter_model.safetensors, adapter_config.json)
    rank_NNN/optimizer.* this rank's optimizer state (ZeRO shard, fp32 master weights included)
    rank_NNN/scheduler.*, rank_NNN/rng.*   learning-rate schedule and random generators
    learner.json         written last by rank 0: its presence marks the checkpoint complete
"""
from __future__ import annotations

import json
from pathlib import Path

from medpo_ray.training.dist import barrier
from medpo_ray.training.errors import CheckpointError
from medpo_ray.training.finetune import ADAPTER, is_lora
from medpo_ray.training.state_io import load_state, rng_state, save_state, set_rng_state
from medpo_ray.training.weights import full_state_dict, load_into

META = "learner.json"
FORMAT = 1
# Settings that fix the shape of the saved state: resuming with another value cannot be exact.
_MUST_MATCH = ("world_size", "zero_stage", "finetune", "bf16", "micro_batch", "batch_size")
_ENGINE_COUNTERS = ("global_steps", "global_samples", "micro_steps", "skipped_steps")


def _meta(learner) -> dict:
    t = learner.train
    return {"format": FORMAT, "step": learner.step, "world_size": learner.env.world_size,
            "zero_stage": t.zero_stage, "finetune": t.finetune, "bf16": t.bf16, "micro_batch": t.micro_batch,
            "batch_size": t.batch_size, "base_model": learner.model_dir,
            "engine": {k: int(getattr(learner.engine, k)) for k in _ENGINE_COUNTERS}}


def _rank_dir(root: Path, rank: int) -> Path:
    return root / f"rank_{rank:03d}"


def save(learner, root: Path) -> None:
    """Every rank writes its shard, then rank 0 writes the model and, last, learner.json."""
    lora = is_lora(learner.engine.module)
    rank_dir = _rank_dir(root, learner.rank)
    rank_dir.mkdir(parents=True, exist_ok=True)
    save_state(rank_dir / "optimizer", learner.optimizer.state_dict())
    save_state(rank_dir / "scheduler", learner.scheduler.state_dict())
    save_state(rank_dir / "rng", rng_state())
    # A collective under ZeRO-3, so every rank gathers even though rank 0 alone writes.
    weights = full_state_dict(learner.engine.module, learner.zero3, keep=learner.rank == 0, trainable_only=lora)
    if learner.rank == 0:
        if lora:
            learner.engine.module.save_pretrained(root / "adapter", state_dict=weights, safe_serialization=True)
        else:
            learner.engine.module.save_pretrained(root / "model", state_dict=weights, safe_serialization=True)
            learner.processor.save_pretrained(root / "model")
    barrier()
    if learner.rank == 0:
        tmp = root / (META + ".tmp")
        tmp.write_text(json.dumps(_meta(learner), indent=1) + "\n")
        tmp.replace(root / META)
    barrier()


def read_meta(root: Path) -> dict:
    """The checkpoint's learner.json, or CheckpointError if the checkpoint is missing or incomplete."""
    path = root / META
    if not path.is_file():
        raise CheckpointError(f"{str(root)!r} is not a complete learner checkpoint: {META} is missing")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable: {e}") from None


def check_compatible(meta: dict, now: dict, root: Path) -> None:
    """Raise CheckpointError unless the checkpoint was written by a learner set up like this one."""
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{root}: checkpoint format {meta.get('format')!r}, this learner reads {FORMAT}")
    for key in _MUST_MATCH:
        if meta.get(key) != now[key]:
            raise CheckpointError(f"{root}: saved with {key}={meta.get(key)!r}, but this learner group has "
                                  f"{key}={now[key]!r}; resume with the same train settings")


def _saved_weights(learner, root: Path, lora: bool) -> dict:
    """Module-named tensors to load on this rank (under ZeRO-3 only rank 0 reads; it broadcasts)."""
    if learner.zero3 and learner.rank != 0:
        return {}
    if lora:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        file = root / "adapter" / "adapter_model.safetensors"
        if not file.is_file():
            raise CheckpointError(f"{file} is missing")
        try:
            saved = load_file(str(file))
        except (OSError, SafetensorError) as e:
            raise CheckpointError(f"{file}: unreadable: {e}") from None
        names = [n for n, p in learner.engine.module.named_parameters() if p.requires_grad]
        # peft drops the adapter name from the keys it saves.
        return {n: saved[n.replace(f".{ADAPTER}.", ".")] for n in names if n.replace(f".{ADAPTER}.", ".") in saved}
    return _load_hf_weights(root / "model", learner._hf_ds)


def _load_hf_weights(model_dir: Path, hf_ds_config) -> dict:
    """State dict (module names) of an HF model directory, read whole, outside any ZeRO-3 sharding."""
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    from medpo_ray.models.loading import load_policy

    # With the ZeRO-3 config registered, from_pretrained would shard: a collective rank 0 cannot run alone.
    unset_hf_deepspeed_config()
    try:
        return load_policy(model_dir).state_dict()
    finally:
        if hf_ds_config is not None:
            set_hf_deepspeed_config(hf_ds_config)


def load(learner, root: Path) -> dict:
    """Restore weights, optimizer (with fp32 master copies), scheduler, RNG and step counters."""
    meta = read_meta(root)
    check_compatible(meta, _meta(learner), root)
    rank_dir = _rank_dir(root, learner.rank)
    if not rank_dir.is_dir():
        raise CheckpointError(f"{rank_dir} is missing (no state saved for rank {learner.rank})")
    lora = is_lora(learner.engine.module)
    names = [n for n, p in learner.engine.module.named_parameters() if p.requires_grad] if lora else None
    missing = load_into(learner.engine.module, _saved_weights(learner, root, lora), learner.zero3, names)
    if missing:
        raise CheckpointError(f"{root}: no saved tensor for {len(missing)} parameter(s), e.g. {missing[:3]}")
    live = learner.optimizer.state_dict()
    saved = load_state(rank_dir / "optimizer", live)
    if learner.train.zero_stage == 0:
        learner.optimizer.load_state_dict(saved)
    else:
        # DeepSpeed indexes the list by data-parallel rank; the master weights come from the saved fp32 copy.
        learner.optimizer.load_state_dict([saved] * learner.env.world_size, load_optimizer_states=True,
                                          load_from_fp32_weights=True)
    learner.scheduler.load_state_dict(load_state(rank_dir / "scheduler", learner.scheduler.state_dict()))
    set_rng_state(load_state(rank_dir / "rng"))
    for key, value in meta["engine"].items():
        setattr(learner.engine, key, value)
    learner.step = int(meta["step"])
    barrier()
    return meta
