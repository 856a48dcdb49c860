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

WIRE_SEGMENT = 512 << 20  # bytes per msgpack bin of a bucket sent to a multiprocess engine
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
    # Names a partial push leaves out: tensors training never changes that the engine loaded from an
    # earlier full push (LoRA: everything but the layers the adapters touch). Empty: a full push.
    omitted: frozenset[str] = frozenset()

    def wire(self) -> dict:
        """The bucket as plain msgpack data for vLLM's multiprocess engine (every GPU run), whose
        `collective_rpc` encodes arguments without their types: a dataclass arrives as a dict and an array
        as a bare (dtype, shape, buffer index) triple. So the header goes as lists and the buffer as byte
        segments of at most WIRE_SEGMENT bytes (msgpack's bin type holds under 4 GiB)."""
        view = memoryview(np.ascontiguousarray(self.data)).cast("B")
        return {"flat_header": [[n, d, list(s), o] for n, d, s, o in self.header],
                "segments": [view[i:i + WIRE_SEGMENT] for i in range(0, len(view), WIRE_SEGMENT)] or [b""],
                "frozen": sorted(self.frozen), "omitted": sorted(self.omitted)}

    @classmethod
    def from_wire(cls, obj: FlatBucket | dict) -> FlatBucket:
        """A bucket from `wire()`'s form as it arrives in the worker process, or the bucket itself."""
        if isinstance(obj, FlatBucket):
            return obj
        try:
            header = tuple((str(n), str(d), tuple(int(x) for x in s), int(o)) for n, d, s, o in obj["flat_header"])
            parts = [np.frombuffer(seg, dtype=np.uint8) for seg in obj["segments"]]
            data = parts[0] if len(parts) == 1 else np.concatenate(parts)
            return cls(header, data, frozenset(obj.get("frozen", ())), frozenset(obj.get("omitted", ())))
        except (KeyError, TypeError, ValueError) as e:
            raise WeightSyncError(f"weight push: not a flat bucket in wire form: {type(e).__name__}: {e}") from None

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
              alloc: Callable[[int], np.ndarray] | None = None, omitted: Iterable[str] = ()) -> FlatBucket:
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
    return FlatBucket(header, out, frozenset(n for n in frozen if n in names), frozenset(omitted) - names)


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
