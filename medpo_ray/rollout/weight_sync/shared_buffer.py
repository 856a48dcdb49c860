"""A flat weight buffer in one /dev/shm file that the learner rewrites in place every sync and the engines
on the same node keep mapped: a sync moves only a small descriptor (SharedWeights) through Ray.

Why: the Ray object store costs ~8 ms per object of a few hundred KB or more on 2 cores (create, seal,
locate, map: measured with a no-op consumer), whatever the size, plus a full copy into the store; for the
tiny policy that is a third of a sync, and for a 100 MB policy the copy is ~95 ms. Here the export packs
straight into the mapped file (the only copy) and the engine reads tensor views of its own mapping.

The file starts with a 64-byte stamp: -1 while the writer is writing, then the number of that write. A reader
checks the stamp before loading (refused, nothing applied) and after (the rollout actor then exits, so
Ray restarts it clean rather than let it serve a mix of two versions). The driver never lets that
happen: it exports only after every engine answered the previous sync.
"""
from __future__ import annotations

import mmap
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from medpo_ray.rollout.weight_sync.base import WeightSyncError
from medpo_ray.rollout.weight_sync.flat import FlatBucket, pack_flat

_STAMP = 64  # bytes before the data: int64 write number (-1 while writing), padded to keep the data aligned
SHM_DIR = "/dev/shm"
PREFIX = "medpo-weights-"


@dataclass(frozen=True)
class SharedWeights:
    """What travels through Ray per sync: where the buffer is and how to read it (a few KB)."""

    path: str
    nbytes: int
    header: tuple
    frozen: frozenset[str]
    seq: int  # the writer's count of writes: the stamp the file must hold while it is read
    omitted: frozenset[str] = frozenset()  # a partial push's left-out names (FlatBucket.omitted)


def shm_room(nbytes: int, directory: str = SHM_DIR) -> bool:
    """Whether `directory` exists and has room for an `nbytes` buffer (containers often mount 64 MB)."""
    try:
        return shutil.disk_usage(directory).free > nbytes + _STAMP + (16 << 20)
    except OSError:
        return False


class SharedWeightsWriter:
    """The learner side: one file, sized on first write, rewritten in place by every `write`."""

    def __init__(self, directory: str = SHM_DIR, tag: str = ""):
        self.path = os.path.join(directory, f"{PREFIX}{tag or uuid.uuid4().hex[:12]}.bin")
        self._map: mmap.mmap | None = None
        self._size = 0
        self.seq = 0

    def _buffer(self, nbytes: int) -> np.ndarray:
        """The data area for `nbytes` (the file re-created if the size changed), stamped as being written."""
        if self._map is None or self._size != nbytes:
            self.close()
            with open(self.path, "w+b") as f:
                f.truncate(_STAMP + nbytes)
                self._map = mmap.mmap(f.fileno(), _STAMP + nbytes)
            self._size = nbytes
        self._stamp(-1)
        return np.frombuffer(self._map, dtype=np.uint8, count=nbytes, offset=_STAMP)

    def _stamp(self, value: int) -> None:
        stamp = np.frombuffer(self._map, dtype=np.int64, count=1)
        stamp[0] = value
        del stamp  # no exported buffer may outlive the map (close() would fail)

    def write(self, named_tensors: Iterable[tuple[str, object]], frozen: Iterable[str] = (),
              omitted: Iterable[str] = ()) -> SharedWeights:
        """Pack the tensors into the file; the descriptor engines load them from."""
        bucket = pack_flat(named_tensors, frozen=frozen, alloc=self._buffer, omitted=omitted)
        self.seq += 1
        self._stamp(self.seq)
        return SharedWeights(self.path, bucket.data.nbytes, bucket.header, bucket.frozen, self.seq, bucket.omitted)

    def close(self) -> None:
        """Unmap and delete the file (engines that mapped it keep their mapping until they drop it)."""
        if self._map is not None:
            self._map.close()
            self._map = None
        if os.path.exists(self.path):
            os.remove(self.path)


class SharedWeightsReader:
    """The engine side: keeps the file mapped across syncs (re-mapped if the writer resized it)."""

    def __init__(self):
        self._maps: dict[str, tuple[int, mmap.mmap]] = {}

    def _mapped(self, ref: SharedWeights) -> mmap.mmap:
        held = self._maps.get(ref.path)
        if held is None or held[0] != ref.nbytes:
            try:
                with open(ref.path, "rb") as f:
                    if os.fstat(f.fileno()).st_size != _STAMP + ref.nbytes:
                        raise WeightSyncError(f"weight buffer {ref.path} is not {_STAMP + ref.nbytes} bytes")
                    held = (ref.nbytes, mmap.mmap(f.fileno(), _STAMP + ref.nbytes, access=mmap.ACCESS_READ))
            except OSError as e:
                raise WeightSyncError(f"weight buffer {ref.path} cannot be mapped here: {e} (shared-memory "
                                      "sync needs the learner's rank 0 on this node)") from None
            self._maps[ref.path] = held
        return held[1]

    def stamp(self, ref: SharedWeights) -> int:
        """The number of the write the buffer holds now (-1: being written)."""
        return int(np.frombuffer(self._mapped(ref), dtype=np.int64, count=1)[0])

    def open(self, ref: SharedWeights) -> FlatBucket:
        """The push as a FlatBucket of views into the mapping; refused unless it holds write `ref.seq`."""
        self.check(ref)
        data = np.frombuffer(self._mapped(ref), dtype=np.uint8, count=ref.nbytes, offset=_STAMP)
        return FlatBucket(ref.header, data, ref.frozen, ref.omitted)

    def check(self, ref: SharedWeights) -> None:
        """Raise unless the buffer still holds write `ref.seq` (call again after loading from it)."""
        got = self.stamp(ref)
        if got != ref.seq:
            raise WeightSyncError(f"weight buffer {ref.path} holds write {got}, not {ref.seq}: it was "
                                  "rewritten while this engine read it")
