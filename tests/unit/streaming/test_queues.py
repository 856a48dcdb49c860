"""Bounded queues: the capacity holds under any interleaving of producers and consumers."""
from __future__ import annotations

import random

import pytest

from medpo_ray.streaming.queues import BoundedQueue, Chunk, QueueOverflow

pytestmark = pytest.mark.unit


def test_a_full_queue_refuses_its_producer_until_the_consumer_takes():
    q = BoundedQueue("editor", 4)
    assert q.room(3)
    q.reserve(3)  # a producer call of 3 records starts
    assert not q.room(2) and q.blocked == 1  # a second call of 2 would overflow: backpressure
    q.release(3)
    q.put(Chunk(["a", "b", "c"], None, None))
    assert (q.depth, q.free()) == (3, 1) and not q.room(2)
    assert q.take().ids == ["a", "b", "c"] and q.room(2) and q.depth == 0


def test_putting_without_room_is_a_bug_not_a_silent_overflow():
    q = BoundedQueue("corruption", 2)
    q.put(Chunk(["a", "b"], None, None))
    with pytest.raises(QueueOverflow, match="corruption"):
        q.put(Chunk(["c"], None, None))
    with pytest.raises(QueueOverflow):
        q.reserve(1)
    with pytest.raises(QueueOverflow):
        q.release(1)
    with pytest.raises(ValueError):
        BoundedQueue("x", 0)


def test_depth_never_exceeds_capacity_under_random_interleavings():
    rng = random.Random(0)
    q = BoundedQueue("rollout", 5)
    calls: list[int] = []  # producer calls in flight, by the records they may return
    for _ in range(5000):
        op = rng.random()
        if op < 0.4:
            n = rng.randint(1, 3)
            if q.room(n):
                q.reserve(n)
                calls.append(n)
        elif op < 0.7 and calls:
            n = calls.pop(rng.randrange(len(calls)))
            q.release(n)
            kept = rng.randint(0, n)  # a call returns at most what it reserved (drops shrink it)
            q.put(Chunk([f"r{i}" for i in range(kept)], None, None))
        elif q.peek() is not None:
            q.take()
        assert 0 <= q.depth <= q.capacity and q.depth + q.reserved <= q.capacity
    assert q.max_depth == q.capacity and q.blocked > 0  # the bound was reached and enforced
