"""One flat byte buffer holding every tensor of a push, plus a header of (name, dtype, shape, offset).

The transport for an engine that gets the push in memory (a Ray actor around an in-process vLLM engine,
or the engine in this process): the producer copies each tensor into the buffer once; the Ray object
store hands the numpy buffer to the reader as a zero-copy view of shared memory; the engine reads every
tensor as a view of it and copies it straight into the model. The safetensors `bytes` transport costs
four more full copies of the weights on that road (pickle, save, bytes(), load).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from medpo_ray.rollout.weight_sync.base import TensorMeta, WeightSyncError

_ALIGN = 64  # every tensor starts 64 bytes apart from the (16-byte aligned) start: aligned for any dtype
_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64",
           "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


@dataclass(frozen=True)
class FlatBucket:
    """`header[i]` = (name, safetensors dtype name, shape, byte offset) of a tensor in `data` (uint8).

    `frozen`: names whose values cannot change during the run (parameters the learner does not train):
    an engine that already loaded one of them from an earlier push may skip it.
    """

    header: tuple[tuple[str, str, tuple[int, ...], int], ...]
    data: np.ndarray
    frozen: frozenset[str] = frozenset()

    def metas(self) -> dict[str, TensorMeta]:
        """name -> (dtype, shape); a name twice is an error."""
        out: dict[str, TensorMeta] = {}
        for name, dtype, shape, _ in self.header:
            if name in out:
                raise WeightSyncError(f"weight push: tensor {name!r} appears twice in the flat bucket")
            out[name] = (dtype, tuple(shape))
        return out


_NAMES = {torch_name: short for short, torch_name in _DTYPES.items()}


def _dtype_name(dtype) -> str:
    try:
        return _NAMES[str(dtype).removeprefix("torch.")]
    except KeyError:
        raise WeightSyncError(f"weight push: dtype {dtype} has no safetensors name") from None


def flat_layout(tensors: list[tuple[str, object]]) -> tuple[tuple, int]:
    """(header, buffer bytes) of packing `tensors` (name, tensor) in this order."""
    header, offset = [], 0
    for name, t in tensors:
        header.append((name, _dtype_name(t.dtype), tuple(t.shape), offset))
        offset += -(-t.numel() * t.element_size() // _ALIGN) * _ALIGN
    return tuple(header), offset


def pack_flat(named_tensors: Iterable[tuple[str, object]], frozen: Iterable[str] = (),
              alloc: Callable[[int], np.ndarray] | None = None) -> FlatBucket:
    """Copy every tensor once into one aligned uint8 buffer (tied tensors are shipped under each name);
    `frozen` names the ones that never change (see FlatBucket). `alloc(nbytes)`: the uint8 buffer to
    pack into (a shared-memory mapping) instead of a new array."""
    import torch

    tensors = [(name, t.detach()) for name, t in named_tensors]
    header, nbytes = flat_layout(tensors)
    out = np.empty(nbytes, dtype=np.uint8) if alloc is None else alloc(nbytes)
    if out.nbytes != nbytes:
        raise WeightSyncError(f"weight push: the target buffer holds {out.nbytes} bytes, the tensors need {nbytes}")
    flat = torch.from_numpy(out)
    for (_, _, _, start), (_, t) in zip(header, tensors, strict=True):
        n = t.numel() * t.element_size()
        if n:
            flat[start:start + n].view(t.dtype).view(t.shape).copy_(t)  # strided sources too, one copy
    names = {name for name, _ in tensors}
    return FlatBucket(header, out, frozenset(n for n in frozen if n in names))


def unpack_flat(bucket: FlatBucket) -> list[tuple[str, object]]:
    """Every tensor as a view of the buffer (no copy); a header that does not fit the buffer is refused."""
    import torch

    if not isinstance(bucket.data, np.ndarray) or bucket.data.dtype != np.uint8 or bucket.data.ndim != 1:
        raise WeightSyncError("weight push: a flat bucket's data must be a 1-D uint8 numpy array")
    with warnings.catch_warnings():
        # A buffer read from the Ray object store is read-only; the engine only copies out of it.
        warnings.filterwarnings("ignore", message=".*not writable.*")
        flat = torch.from_numpy(bucket.data)
    out = []
    for name, dtype, shape, start in bucket.header:
        if dtype not in _DTYPES:
            raise WeightSyncError(f"weight push: tensor {name!r} has unknown dtype {dtype!r}")
        tdtype = getattr(torch, _DTYPES[dtype])
        n = int(np.prod(shape, dtype=np.int64)) * tdtype.itemsize
        if start < 0 or start % _ALIGN or start + n > flat.numel():
            raise WeightSyncError(f"weight push: tensor {name!r} ({dtype} {list(shape)} at byte {start}) "
                                  f"does not fit the {flat.numel()}-byte flat bucket")
        out.append((name, flat[start:start + n].view(tdtype).view(shape)))
    return out
