"""Everything `medpo-ray sft` (and the demo) needs before and around training: the dataset and the base
model, built when missing, the records of a split, and the cached SFT checkpoint."""
from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from medpo_ray.config import Config
from medpo_ray.data.record import BadRecord, Record
from medpo_ray.errors import MedpoError
from medpo_ray.sft import cache

# Generator knobs recorded in an embedded dataset's manifest that must match the configuration.
_DATA_KNOBS = ("studies", "seed", "size", "difficulty", "amplitude", "radius_min", "radius_max", "radius_levels")
# Knobs a manifest may leave out (made before the knob existed, or at its default): the value they mean.
_KNOB_ABSENT = {"radius_levels": 0}


class DataMismatchError(MedpoError):
    """data.path holds a dataset generated with other knobs than the configuration asks for."""


@dataclass(frozen=True)
class Checkpoint:
    """An SFT checkpoint directory, its training stats, and whether it came from the cache."""

    path: Path
    stats: dict
    cached: bool


def _progress(label: str):
    state = {"start": time.perf_counter(), "last": 0.0}

    def report(done: int, total: int) -> None:
        now = time.perf_counter() - state["start"]
        if now - state["last"] < 2.0 and done < total:
            return
        state["last"] = now
        rate = done / max(now, 1e-9)
        print(f"{label}: {done}/{total}, {rate:.0f}/s, ETA {(total - done) / rate:.0f} s", file=sys.stderr, flush=True)
    return report


def ensure_data(cfg: Config) -> Path:
    """The dataset directory; the embedded one is generated from cfg.data when absent, and checked when present."""
    import json

    from medpo_ray.data.lesions import LesionParams
    from medpo_ray.data.schema import MANIFEST_FILE, STUDIES_FILE
    from medpo_ray.data.synth import synthesize

    d = cfg.data
    path = Path(d.path)
    if d.source != "embedded":
        if not path.exists():
            raise MedpoError(f"data.path {str(path)!r} does not exist (data.source is {d.source!r})")
        return path
    wanted = {k: getattr(d, k) for k in _DATA_KNOBS}
    if not (path / STUDIES_FILE).is_file():
        params = LesionParams.from_difficulty(d.difficulty, d.size, d.amplitude, d.radius_min, d.radius_max,
                                              d.radius_levels)
        print(f"data: generating {d.studies} embedded studies into {path} (difficulty {d.difficulty}"
              + (f", {d.radius_levels} radius levels" if d.radius_levels else "") + ")", file=sys.stderr)
        given = {k: wanted[k] for k in ("difficulty", "amplitude", "radius_min", "radius_max")}
        if d.radius_levels:  # recorded only when set, so a continuous dataset's manifest is as before
            given["radius_levels"] = d.radius_levels
        synthesize(path, d.studies, d.seed, d.size, params, args=given, progress=_progress("data synth"))
        return path
    try:
        made = json.loads((path / MANIFEST_FILE).read_text())["args"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DataMismatchError(f"data.path {str(path)!r} has no readable {MANIFEST_FILE}; "
                                "regenerate it or point data.path elsewhere") from None
    made = {k: made.get(k, _KNOB_ABSENT.get(k)) for k in _DATA_KNOBS}
    diff = [f"data.{k}: dataset has {made[k]!r}, config asks {wanted[k]!r}"
            for k in _DATA_KNOBS if made[k] != wanted[k]]
    if diff:
        raise DataMismatchError(f"data.path {str(path)!r} was generated with other knobs ({'; '.join(diff)}); "
                                "point data.path at a new directory or delete this one")
    return path


def ensure_base_model(cfg: Config, data_dir: Path) -> Path:
    """model.path when given, else the embedded preset built under sft.out_dir/base (tokenizer from the data)."""
    from medpo_ray.models.loading import check_model_dir

    if cfg.model.path:
        return check_model_dir(cfg.model.path)
    from medpo_ray.models.corpus import dataset_texts
    from medpo_ray.models.factory import build_model
    from medpo_ray.models.presets import get_preset

    name = f"{cfg.model.preset}-seed{cfg.run.seed}-{cache.fingerprint(data_dir)[:12]}"
    out = Path(cfg.sft.out_dir) / "base" / name
    if not (out / "config.json").is_file():
        print(f"model: building preset {cfg.model.preset!r} into {out}", file=sys.stderr)
        tmp = cache.staging_dir(out.parent, name)
        build_model(tmp, get_preset(cfg.model.preset), dataset_texts(data_dir), seed=cfg.run.seed)
        cache.publish(tmp, out.parent, name)
    return out


def load_split(cfg: Config, data_dir: Path, split: str) -> tuple[list[Record], list[BadRecord]]:
    """Validated records of one split (only the configured task), and the quarantined ones."""
    from medpo_ray.data.sources import open_source
    from medpo_ray.data.validate import Limits

    source = open_source(cfg.data.source, data_dir, split=split, limits=Limits.from_config(cfg.data))
    result = source.load()
    records = [r for r in result.records if cfg.data.task in ("both", r.task)]
    return records, result.bad


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
