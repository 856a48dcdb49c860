"""A dataset on disk and its splits: the embedded dataset generated when absent (and checked against the
configuration when present), the validated records of a split, and the two splits a training run reads.
Everything here is pure (no Ray): the driver, SFT, evaluation, the demo, the study and the benches share it."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from medpo_ray.config import Config
from medpo_ray.data.record import BadRecord, Record
from medpo_ray.errors import MedpoError

# Generator knobs recorded in an embedded dataset's manifest that must match the configuration.
_DATA_KNOBS = ("studies", "seed", "size", "difficulty", "amplitude", "radius_min", "radius_max", "radius_levels")
# Knobs a manifest may leave out (made before the knob existed, or at its default): the value they mean.
_KNOB_ABSENT = {"radius_levels": 0}


class DataMismatchError(MedpoError):
    """data.path holds a dataset generated with other knobs than the configuration asks for."""


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


def load_split(cfg: Config, data_dir: Path, split: str) -> tuple[list[Record], list[BadRecord]]:
    """Validated records of one split (only the configured task), and the quarantined ones."""
    from medpo_ray.data.sources import open_source
    from medpo_ray.data.validate import Limits

    source = open_source(cfg.data.source, data_dir, split=split, limits=Limits.from_config(cfg.data))
    result = source.load()
    records = [r for r in result.records if cfg.data.task in ("both", r.task)]
    return records, result.bad


def load_train_split(cfg: Config, data_dir: Path) -> tuple[dict[str, Record], list[BadRecord]]:
    """The training split as {record_id: Record}, and the records quarantined (reported, first ten named)."""
    records, bad = load_split(cfg, data_dir, "train")
    for b in bad[:10]:
        print(f"[data] quarantined: {b}")
    if bad:
        print(f"[data] {len(bad)} bad record(s) quarantined; {len(records)} good")
    return {r.record_id: r for r in records}, bad


def load_train_records(cfg: Config, data_dir: Path) -> dict[str, Record]:
    """The training split as {record_id: Record}; bad records are reported and left out."""
    return load_train_split(cfg, data_dir)[0]


def load_probe_records(cfg: Config, data_dir: Path) -> list[Record] | None:
    """The guard's held-out split (guard.split), or None (guard off, or no such split: said once)."""
    if not cfg.guard.every:
        return None
    if not cfg.train.on_policy:
        print("[guard] offline run (train.on_policy: false): the engines keep the warm start, so the probe is off")
        return None
    try:
        records, _ = load_split(cfg, data_dir, cfg.guard.split)
    except MedpoError as e:
        print(f"[guard] cannot read the {cfg.guard.split!r} split of {data_dir} ({e}): the probe against harm is off")
        return None
    if not records:
        print(f"[guard] no {cfg.guard.split!r} split in {data_dir}: the probe against harm is off")
        return None
    return records
