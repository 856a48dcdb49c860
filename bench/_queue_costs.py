"""What moving a chunk between stages costs, for bench/pipeline.py: the driver's own plumbing replayed over
no-op actors, and the two Ray mechanisms it was measured against (a queue actor, a streaming generator)."""
from __future__ import annotations

import statistics
import time


def queue_overhead(probe, chunks: int) -> dict:
    """ms per record of the driver's plumbing: three StagePools chained as the pump chains them, over
    no-op actors that hand back the strict run's real payloads (so transfers are the real sizes)."""
    import ray

    from actors.pool import StagePool
    from medpo_ray.ledger import Ledger

    @ray.remote(num_cpus=0.25)
    class NoopStage:
        """Returns a fixed (meta, payload): every cost left is Ray's and the pool's."""

        def __init__(self, meta, payload):
            self.meta, self.payload = meta, payload

        def call(self, *args):
            """Ignore the (resolved) arguments; hand back the stored result."""
            return self.meta, self.payload

    records = ray.get(probe.samples["records"][2])
    stages = [(name, *probe.samples[name][1:]) for name in ("rollout", "editor", "corruption")]
    ledger = Ledger()
    pools = [StagePool(name, [NoopStage.remote(meta, ray.get(ref))], "call", ledger) for name, meta, ref in stages]
    n = len(records)

    def one_chunk(c: int) -> None:
        ids = [f"noop{c}-{i}" for i in range(n)]
        ledger.issue(ids)
        ref = ray.put(records)
        pools[0].submit(ids, ref)
        for i, pool in enumerate(pools):
            done = []
            while not done:
                ready, _ = ray.wait(pool.wait_refs(), num_returns=1, timeout=1.0)
                done = pool.collect(ready)
            if i + 1 < len(pools):
                pools[i + 1].submit(ids, ref, done[0].payload)

    for c in range(5):  # actor start-up and first-call costs are not per-record plumbing
        one_chunk(-1 - c)
    times = []
    for c in range(chunks):
        t = time.perf_counter()
        one_chunk(c)
        times.append(time.perf_counter() - t)
    for p in pools:
        for a in p.actors:
            ray.kill(a)
    # The median chunk, as the step rates take the median step: a burst of other load (the previous
    # run's actors still exiting) hits single chunks.
    mid = statistics.median(times)
    return {"ms_per_record": 1000 * mid / n, "ms_per_chunk": 1000 * mid, "chunk": n,
            "ms_per_record_mean": 1000 * sum(times) / (chunks * n)}


def queue_actor_overhead(chunks: int) -> float:
    """Median ms of one put and one get of an ObjectRef through a ray.util.queue.Queue actor: the cost a
    queue actor between two stages would add to every chunk (the driver-held queues cost nothing here)."""
    import ray
    from ray.util.queue import Queue

    q = Queue(maxsize=4)
    ref = ray.put(b"x" * 1024)
    times = []
    for c in range(chunks + 5):
        t = time.perf_counter()
        q.put([ref])
        q.get()
        if c >= 5:  # the actor's start and first calls are not per-chunk costs
            times.append(time.perf_counter() - t)
    q.shutdown()
    return 1000 * statistics.median(times)


def streaming_generator_overhead(chunks: int) -> float:
    """Median ms per chunk that a Ray streaming generator hands from a producer actor to this process (the
    chunk's ref yielded, then fetched): the mechanism that would stream one stage call's output piece by
    piece. It binds a consumer to one producer call, so it bounds nothing across actors on its own."""
    import ray

    @ray.remote(num_cpus=0.25)
    class Producer:
        def chunks(self, n: int):
            for _ in range(n):
                yield b"x" * 1024

    producer = Producer.remote()
    ray.get(producer.__ray_ready__.remote())
    gen = producer.chunks.options(num_returns="streaming").remote(chunks + 5)
    times = []
    for c in range(chunks + 5):
        t = time.perf_counter()
        ray.get(next(gen))
        if c >= 5:
            times.append(time.perf_counter() - t)
    ray.kill(producer)
    return 1000 * statistics.median(times)
