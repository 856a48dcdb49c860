"""Nested training state (optimizer, scheduler, RNG) as one safetensors file plus one JSON file.

Nothing here unpickles: tensors go to safetensors, everything else must be JSON (numbers, strings,
lists, tuples, dicts with any JSON-able keys). Values of other types, such as DeepSpeed's loss-scaler
object, are written as a `$live` placeholder and taken back, on load, from the live state of the object
being restored, which was built the same way.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from medpo_ray.training.errors import CheckpointError

_MISSING = object()


def encode_state(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """(JSON skeleton, tensors by key) of a nested state."""
    tensors: dict[str, torch.Tensor] = {}

    def enc(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            key = str(len(tensors))
            # A private contiguous copy: safetensors refuses views and tensors that share storage.
            tensors[key] = x.detach().to("cpu", copy=True).contiguous()
            return {"$tensor": key}
        if isinstance(x, np.ndarray):
            key = str(len(tensors))
            tensors[key] = torch.from_numpy(x.astype(np.int64) if x.dtype.kind in "ui" else x.copy())
            return {"$ndarray": key, "dtype": x.dtype.str}
        if x is None or type(x) in (bool, int, float, str):
            return x
        if isinstance(x, np.generic):
            return x.item()
        for plain in (bool, int, float, str):  # subclasses such as DeepSpeed's IntEnum stage: plain value
            if isinstance(x, plain):
                return plain(x)
        if isinstance(x, dict):
            return {"$dict": [[enc(k), enc(v)] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {"$tuple": [enc(v) for v in x]}
        if isinstance(x, list):
            return [enc(v) for v in x]
        return {"$live": type(x).__name__}

    return enc(obj), tensors


def decode_state(skeleton: Any, tensors: dict[str, torch.Tensor], live: Any = None, where: str = "state") -> Any:
    """Inverse of encode_state; `$live` placeholders are filled from `live` at the same place."""

    def at(container: Any, key: Any) -> Any:
        try:
            return container[key]
        except (KeyError, IndexError, TypeError):
            return _MISSING

    def dec(x: Any, lv: Any, path: str) -> Any:
        if isinstance(x, list):
            return [dec(v, at(lv, i), f"{path}[{i}]") for i, v in enumerate(x)]
        if not isinstance(x, dict):
            return x
        if "$tensor" in x:
            return tensors[x["$tensor"]]
        if "$ndarray" in x:
            return tensors[x["$ndarray"]].numpy().astype(np.dtype(x["dtype"]))
        if "$tuple" in x:
            return tuple(dec(v, at(lv, i), f"{path}[{i}]") for i, v in enumerate(x["$tuple"]))
        if "$live" in x:
            if lv is _MISSING or lv is None:
                raise CheckpointError(f"{where}: {path} holds a {x['$live']} that only the live state can "
                                      f"provide, and the live state has none there")
            return lv
        out = {}
        for k, v in x["$dict"]:
            key = dec(k, _MISSING, path)
            out[key] = dec(v, at(lv, key), f"{path}[{key!r}]")
        return out

    return dec(skeleton, live, "")


def save_state(prefix: Path, obj: Any) -> None:
    """Write `obj` as PREFIX.safetensors and PREFIX.json."""
    skeleton, tensors = encode_state(obj)
    save_file(tensors, str(prefix.with_suffix(".safetensors")))
    prefix.with_suffix(".json").write_text(json.dumps(skeleton))


def load_state(prefix: Path, live: Any = None) -> Any:
    """Read what save_state wrote; `$live` entries come from `live`."""
    files = [prefix.with_suffix(".safetensors"), prefix.with_suffix(".json")]
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"checkpoint file {str(f)!r} is missing")
    try:
        tensors = load_file(str(files[0]))
        skeleton = json.loads(files[1].read_text())
    except (OSError, ValueError, SafetensorError) as e:
        raise CheckpointError(f"checkpoint file {str(prefix)!r}.*: unreadable: {e}") from None
    try:
        return decode_state(skeleton, tensors, live, where=str(prefix))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint file {str(files[1])!r}: malformed: {e!r}") from None


def rng_state() -> dict:
    """Every random generator the learner draws from: python, numpy, torch CPU and accelerator."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what rng_state() captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
