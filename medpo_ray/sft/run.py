"""What `medpo-ray sft` (and the demo) needs around training: the base model, built when missing, and the
cached SFT checkpoint (the dataset and its splits: medpo_ray/data/splits.py)."""
from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from medpo_ray.config import Config
from medpo_ray.data.splits import ensure_data, load_split
from medpo_ray.sft import cache


@dataclass(frozen=True)
class Checkpoint:
    """An SFT checkpoint directory, its training stats, and whether it came from the cache."""

    path: Path
    stats: dict
    cached: bool


def ensure_base_model(cfg: Config, data_dir: Path) -> Path:
    """model.path when given, else the embedded preset built under sft.out_dir/base (tokenizer from the data)."""
    from medpo_ray.models.loading import check_model_dir

    if cfg.model.path:
        return check_model_dir(cfg.model.path)
    from medpo_ray.models.corpus import dataset_texts
    from medpo_ray.models.factory import build_model
    from medpo_ray.models.presets import get_preset

    family = "" if cfg.model.family == "qwen2_vl" else f"{cfg.model.family}-"  # the default keeps its old name
    name = f"{family}{cfg.model.preset}-seed{cfg.run.seed}-{cache.fingerprint(data_dir)[:12]}"
    out = Path(cfg.sft.out_dir) / "base" / name
    if not (out / "config.json").is_file():
        print(f"model: building preset {cfg.model.preset!r} into {out}", file=sys.stderr)
        tmp = cache.staging_dir(out.parent, name)
        build_model(tmp, get_preset(cfg.model.preset), dataset_texts(data_dir, cfg.data.source), seed=cfg.run.seed,
                    family=cfg.model.family)
        cache.publish(tmp, out.parent, name)
    return out


def ensure_sft(cfg: Config, force: bool = False, progress: bool = True) -> Checkpoint:
    """The SFT checkpoint for `cfg`: from the cache when the same data, base model and settings were trained
    before (unless `force`), else trained now on the training split and cached."""
    import json

    from medpo_ray.sft.train import train_sft

    data_dir = ensure_data(cfg)
    base = ensure_base_model(cfg, data_dir)
    key = cache.cache_key(cfg, cache.fingerprint(data_dir), cache.fingerprint(base))
    root = Path(cfg.sft.out_dir)
    hit = cache.cached(root, key)
    if hit is not None and not force:
        return Checkpoint(hit, json.loads((hit / cache.DONE_FILE).read_text()), cached=True)
    records, bad = load_split(cfg, data_dir, "train")
    if bad:
        print(f"sft: {len(bad)} training records quarantined, first: {bad[0]}", file=sys.stderr)
    if cfg.sft.noise.active:
        from medpo_ray.sft.noise import apply_noise

        records = apply_noise(records, cfg.sft.noise)
    tmp = cache.staging_dir(root, key)
    try:
        stats = train_sft(base, records, cfg.sft, tmp, seed=cfg.run.seed, dtype=cfg.model.dtype,
                          max_length=cfg.model.max_model_len, progress=progress)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    stats = {**stats, "quarantined": len(bad), "cache_key": key, "base_model": str(base), "data": str(data_dir)}
    (tmp / cache.DONE_FILE).write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    if force and hit is not None:
        shutil.rmtree(hit)
    return Checkpoint(cache.publish(tmp, root, key), stats, cached=False)
