"""The SFT checkpoint cache: a key from the data, the base model and the SFT settings, so a repeated
`medpo-ray sft` (or demo) with the same inputs reuses the checkpoint instead of training again."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from medpo_ray.config import Config

# Bump when training changes what a given configuration produces, so older checkpoints are not reused.
SFT_CODE_VERSION = "sft-1"
DONE_FILE = "sft_stats.json"
_MANIFESTS = ("manifest.json", "medpo_model.json")
_SFT_NOT_IN_KEY = {"out_dir"}
# Knobs added later, left out of the key while off, so existing checkpoints keep their keys.
_OFF_KNOBS = {"aux_size_levels"}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fingerprint(path: str | Path) -> str:
    """Content fingerprint of a dataset or model directory.

    A directory made by this project carries a manifest that already hashes its contents (data synth's
    manifest.json, the model factory's medpo_model.json + config.json); for anything else the listing
    (relative path, size, mtime) stands in, so a multi-GB model is not read just to be hashed.
    """
    root = Path(path)
    if root.is_file():
        st = root.stat()
        return _sha(f"{root.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    parts = []
    for name in _MANIFESTS:
        if (root / name).is_file():
            parts.append(name.encode() + b"\0" + (root / name).read_bytes())
    if parts:
        if (root / "config.json").is_file():
            parts.append(b"config.json\0" + (root / "config.json").read_bytes())
        return _sha(b"\0\0".join(parts))
    listing = sorted((str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns)
                     for f in root.rglob("*") if f.is_file())
    return _sha(json.dumps(listing).encode())


def cache_key(cfg: Config, data_fp: str, model_fp: str) -> str:
    """Key of the checkpoint that `cfg` trains from this data and base model (everything that changes it)."""
    payload = {
        "version": SFT_CODE_VERSION,
        "data": data_fp,
        "model": model_fp,
        "task": cfg.data.task,
        "sft": cfg.sft.model_dump(exclude=_SFT_NOT_IN_KEY | {k for k in _OFF_KNOBS if not getattr(cfg.sft, k)}
                                  | (set() if cfg.sft.noise.active else {"noise"})),
        "seed": cfg.run.seed,
        "dtype": cfg.model.dtype,
        "max_model_len": cfg.model.max_model_len,
    }
    return _sha(json.dumps(payload, sort_keys=True).encode())[:20]


def cached(root: str | Path, key: str) -> Path | None:
    """The finished checkpoint for `key` under `root`, or None."""
    out = Path(root) / key
    return out if (out / DONE_FILE).is_file() and (out / "config.json").is_file() else None


def staging_dir(root: str | Path, key: str) -> Path:
    """A fresh, empty directory beside the final one to write a checkpoint into."""
    tmp = Path(root) / f".{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, root: str | Path, key: str) -> Path:
    """Move a finished checkpoint into place atomically; a concurrent run that finished first wins."""
    final = Path(root) / key
    try:
        os.replace(tmp, final)
    except OSError:
        if cached(root, key) is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return final
