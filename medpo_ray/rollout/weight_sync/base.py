"""The weight-sync interface, the push payload, and the check every push passes before it is applied."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from medpo_ray.errors import MedpoError

# safetensors dtype names a push may carry; the engine casts them to its own serving dtype.
FLOAT_DTYPES = ("F32", "BF16", "F16")
TensorMeta = tuple[str, tuple[int, ...]]  # (safetensors dtype name, shape)


class WeightSyncError(MedpoError):
    """A push that was refused (and not applied): names the tensors that are missing or misshaped."""


@dataclass(frozen=True)
class WeightPush:
    """One sync's tensors for an engine: one flat bucket (flat.py), safetensors buckets as bytes, or paths
    of safetensors files in shared memory."""

    version: int
    transport: Literal["flat", "bytes", "shm"]
    buckets: tuple


@dataclass(frozen=True)
class WeightManifest:
    """Names and shapes an engine accepts, per naming layout.

    transformers 5 saves Qwen2-VL checkpoints under legacy names (`model.layers.*`, `visual.*`) while
    the live module says `model.language_model.layers.*`, `model.visual.*`; vLLM loads both, so a
    push may use either layout, but all of one.
    """

    layouts: dict[str, dict[str, tuple[int, ...]]]

    def check(self, got: dict[str, TensorMeta], omitted: frozenset[str] = frozenset()) -> str:
        """Raise WeightSyncError unless `got` covers one layout exactly with matching shapes, but for the
        `omitted` names a partial push leaves out (which must be names of that layout); the layout's name."""
        if not got:
            raise WeightSyncError("weight push holds no tensors")
        name, want = max(self.layouts.items(), key=lambda kv: len(kv[1].keys() & got.keys()))
        problems = []
        missing = sorted(want.keys() - got.keys() - omitted)
        stray = sorted(omitted - want.keys())
        if stray:
            problems.append(f"{len(stray)} omitted name(s) the model does not have: {_few(stray)}")
        if missing:
            problems.append(f"{len(missing)} missing tensor(s): {_few(missing)}")
        unknown = sorted(got.keys() - want.keys())
        if unknown:
            problems.append(f"{len(unknown)} unknown tensor(s): {_few(unknown)}")
        shaped = [f"{n} {list(got[n][1])} (expected {list(want[n])})"
                  for n in sorted(want.keys() & got.keys()) if tuple(got[n][1]) != tuple(want[n])]
        if shaped:
            problems.append(f"{len(shaped)} misshaped tensor(s): {_few(shaped)}")
        dtyped = sorted(f"{n} {meta[0]}" for n, meta in got.items() if meta[0] not in FLOAT_DTYPES)
        if dtyped:
            problems.append(f"non-float dtype(s) {_few(dtyped)} (allowed: {', '.join(FLOAT_DTYPES)})")
        if problems:
            raise WeightSyncError(f"weight push refused, previous weights keep serving ({name} layout): "
                                  + "; ".join(problems))
        return name


def _few(items: list[str], k: int = 4) -> str:
    return ", ".join(items[:k]) + (f", ... (+{len(items) - k})" if len(items) > k else "")


class WeightSync(ABC):
    """Learner side of a sync: ship named tensors to every engine and make them serve as `version`.

    One call is one sync: tensors travel in buckets, each engine gets one control call, and on
    return every engine serves the new weights (caches reset, policy_version == version) or none
    does (the push was refused before anything was applied).
    """

    @abstractmethod
    def sync(self, named_tensors: Iterable[tuple[str, object]], version: int) -> dict:
        """Push the tensors; returns timing and size figures of this sync."""

    @abstractmethod
    def close(self) -> None:
        """Release transport resources (process groups, shared memory)."""
