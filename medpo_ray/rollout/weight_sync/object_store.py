"""CPU weight sync: tensors packed into buckets, handed to every engine in one call.

`flat` (the default): one aligned buffer the engine reads as tensor views (weight_sync/flat.py); inside
Ray the push is put into the object store once and every rollout actor reads it zero-copy. `bytes`:
safetensors blobs by value, for a receiver that wants a self-describing format. `shm`: safetensors
files in /dev/shm that the engine reads by path: the transport for an engine in another process
without Ray (vLLM's multiprocess mode would otherwise copy the bytes through its RPC channel).
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import Protocol

from medpo_ray.rollout.weight_sync.base import TensorMeta, WeightPush, WeightSync, WeightSyncError
from medpo_ray.rollout.weight_sync.flat import FlatBucket, pack_flat, unpack_flat

TRANSPORTS = ("flat", "bytes", "shm")

DEFAULT_BUCKET_BYTES = 64 << 20


class PushTarget(Protocol):
    """Where an object-store sync delivers: one local engine, or a client over rollout actors."""

    def apply_push(self, push: WeightPush) -> dict: ...


def iter_buckets(named_tensors: Iterable[tuple[str, object]], bucket_bytes: int) -> Iterator[dict]:
    """Group tensors into dicts of at most ~bucket_bytes each (a larger tensor gets its own bucket)."""
    bucket: dict = {}
    size = 0
    seen: set[int] = set()
    for name, tensor in named_tensors:
        t = tensor.detach().to("cpu").contiguous()
        if t.untyped_storage().data_ptr() in seen:  # tied weights: safetensors refuses shared storage
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        nbytes = t.numel() * t.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = {}, 0
        bucket[name] = t
        size += nbytes
    if bucket:
        yield bucket


def read_header(bucket: FlatBucket | bytes | str) -> dict[str, TensorMeta]:
    """name -> (dtype, shape) from a flat bucket, safetensors blob or file, without reading the data."""
    if isinstance(bucket, FlatBucket):
        return bucket.metas()
    try:
        if isinstance(bucket, str):
            with open(bucket, "rb") as f:
                head = f.read(8)
                raw = f.read(struct.unpack("<Q", head)[0])
        else:
            view = memoryview(bucket)
            raw = bytes(view[8: 8 + struct.unpack("<Q", view[:8])[0]])
        header = json.loads(raw)
    except (OSError, struct.error, ValueError) as e:
        where = bucket if isinstance(bucket, str) else f"{len(bucket)}-byte bucket"
        raise WeightSyncError(f"weight push: {where} is not a safetensors bucket: {e}") from None
    return {n: (m["dtype"], tuple(m["shape"])) for n, m in header.items() if n != "__metadata__"}


def push_header(push: WeightPush) -> dict[str, TensorMeta]:
    """Every tensor's (dtype, shape) across a push's buckets; a name in two buckets is an error."""
    out: dict[str, TensorMeta] = {}
    for bucket in push.buckets:
        for name, meta in read_header(bucket).items():
            if name in out:
                raise WeightSyncError(f"weight push: tensor {name!r} appears in two buckets")
            out[name] = meta
    return out


def load_bucket(bucket: FlatBucket | bytes | str) -> list[tuple[str, object]]:
    """The (name, tensor) pairs of one bucket (flat: views of its buffer; bytes blob; shared-memory file)."""
    from safetensors.torch import load, load_file

    if isinstance(bucket, FlatBucket):
        return unpack_flat(bucket)
    return list((load_file(bucket) if isinstance(bucket, str) else load(bytes(bucket))).items())


class ObjectStoreSync(WeightSync):
    """Pack -> one `apply_push` per sync on the target (which fans out to its engines)."""

    def __init__(self, target: PushTarget, transport: str = "flat", bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                 shm_dir: str = "/dev/shm"):
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
        self.target, self.transport, self.bucket_bytes, self.shm_dir = target, transport, bucket_bytes, shm_dir

    def sync(self, named_tensors: Iterable[tuple[str, object]], version: int, frozen: Iterable[str] = ()) -> dict:
        """Pack the tensors into buckets and apply them on the target as `version`. `frozen` (flat only):
        names that never change, which an engine that has loaded them once skips (FlatBucket)."""
        from safetensors.torch import save, save_file

        t0 = time.perf_counter()
        if self.transport == "flat":
            bucket = pack_flat(named_tensors, frozen=frozen)
            t_pack = time.perf_counter()
            stats = self.target.apply_push(WeightPush(version, "flat", (bucket,)))
            return {**stats, "buckets": 1, "bytes": int(bucket.data.nbytes), "pack_s": t_pack - t0,
                    "sync_s": time.perf_counter() - t0}
        buckets: list = []
        nbytes = 0
        try:
            for bucket in iter_buckets(named_tensors, self.bucket_bytes):
                nbytes += sum(t.numel() * t.element_size() for t in bucket.values())
                if self.transport == "bytes":
                    buckets.append(save(bucket))
                else:
                    fd, path = tempfile.mkstemp(prefix="medpo-weights-", suffix=".safetensors",
                                                dir=self.shm_dir)
                    os.close(fd)
                    buckets.append(path)
                    save_file(bucket, path)
            t_pack = time.perf_counter()
            stats = self.target.apply_push(WeightPush(version, self.transport, tuple(buckets)))
        finally:
            if self.transport == "shm":  # the engines have read them (or refused the push)
                for path in buckets:
                    if os.path.exists(path):
                        os.remove(path)
        return {**stats, "buckets": len(buckets), "bytes": nbytes, "pack_s": t_pack - t0,
                "sync_s": time.perf_counter() - t0}

    def close(self) -> None:
        """Nothing to release: each sync frees its buckets (and shared-memory files) before returning."""
