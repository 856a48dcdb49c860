"""Bounded queues between the pipeline's stages, counted in records.

A queue holds chunks (one stage call's output: its record ids and opaque payload handles, in practice Ray
ObjectRefs) until the next stage takes them. Its capacity is enforced by reservation: a producer may start
a call only when the queue has room for every record the call could return (`room`), reserves that room
(`reserve`) and gives back what it did not use when the call ends (`release`, then `put`). So the depth
never exceeds the capacity, even with several producer calls in flight, and a full queue stops its
producer: that is the backpressure. Pure Python, no Ray: the driver moves the handles.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


class QueueOverflow(RuntimeError):
    """A chunk was put without the room reserved for it: a driver bug, never a user error."""


@dataclass
class Chunk:
    """Records of one step moving together between two stages."""

    ids: list[str]
    step: Any  # the StepBatch the records were issued for
    records: Any  # handle of the chunk's Records (put once, when the prompts were issued)
    payload: Any = None  # handle of the last stage's output for these records (None: prompts)


@dataclass
class BoundedQueue:
    """FIFO of chunks with a capacity in records; depth + reserved <= capacity always holds."""

    name: str
    capacity: int
    chunks: deque[Chunk] = field(default_factory=deque)
    depth: int = 0  # records in the queue
    reserved: int = 0  # records that producer calls in flight may still put
    max_depth: int = 0  # the highest depth seen
    blocked: int = 0  # times a producer found no room (backpressure applied)

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"queue {self.name!r}: capacity must be >= 1, got {self.capacity}")

    def __iter__(self) -> Iterator[Chunk]:
        return iter(self.chunks)

    def free(self) -> int:
        """Records a producer may still reserve."""
        return self.capacity - self.depth - self.reserved

    def room(self, n: int) -> bool:
        """Whether a producer call of up to `n` records may start; counts a refusal as backpressure."""
        ok = n <= self.free()
        if not ok:
            self.blocked += 1
        return ok

    def reserve(self, n: int) -> None:
        """Hold room for `n` records of a producer call that is starting."""
        if n > self.free():
            raise QueueOverflow(f"queue {self.name!r}: reserving {n} records with {self.free()} free "
                                f"(capacity {self.capacity}, depth {self.depth}, reserved {self.reserved})")
        self.reserved += n

    def release(self, n: int) -> None:
        """A producer call ended: give back the room it had reserved (before putting what it returned)."""
        if n > self.reserved:
            raise QueueOverflow(f"queue {self.name!r}: releasing {n} records of {self.reserved} reserved")
        self.reserved -= n

    def put(self, chunk: Chunk) -> None:
        """Append a chunk; it must fit (room reserved and released first), else QueueOverflow."""
        if not chunk.ids:
            return
        if self.depth + self.reserved + len(chunk.ids) > self.capacity:
            raise QueueOverflow(f"queue {self.name!r}: {len(chunk.ids)} records do not fit (capacity "
                                f"{self.capacity}, depth {self.depth}, reserved {self.reserved})")
        self.chunks.append(chunk)
        self.depth += len(chunk.ids)
        self.max_depth = max(self.max_depth, self.depth)

    def peek(self) -> Chunk | None:
        """The chunk `take` would return, or None."""
        return self.chunks[0] if self.chunks else None

    def take(self) -> Chunk:
        """Remove and return the oldest chunk."""
        chunk = self.chunks.popleft()
        self.depth -= len(chunk.ids)
        return chunk
