"""Backpressure between the stages of a real run (vLLM engine, reference critic, corruption worker, two
DeepSpeed ranks): with a learner slowed on purpose no queue ever holds more than its capacity, the
pipeline stops pulling prompts once the step window is full, and the object-store bytes it holds stay
bounded; with a slow span editor the rollouts wait for it. A step still trains exactly batch_size pairs.

The slowness is injected, as a fault would be: a sleep queued on the actor (Ray's `__ray_call__`) ahead
of each call, so the real stage code runs unchanged, only later. The queues are observed at every turn
of the driver's loop (its `_gauges`, which feeds the Prometheus gauges from the same numbers).
"""
from __future__ import annotations

import time

import pytest
import ray

from actors.fleet import Fleet
from driver.loop import STAGES, Driver
from medpo_ray.data.splits import load_train_records

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]

CAPACITY, CHUNK, BATCH = 2, 1, 4


def _sleep(seconds: float):
    def nap(_actor):
        time.sleep(seconds)
    return nap


class Watched(Driver):
    """The real driver, observed at each turn of its loop."""

    def __init__(self, *args, **kwargs):
        self.samples: list[dict] = []
        super().__init__(*args, **kwargs)

    def _gauges(self) -> None:
        super()._gauges()
        refs = {c.records for q in self.queues.values() for c in q} | {
            c.payload for q in self.queues.values() for c in q if c.payload is not None}
        refs |= {call.payload for p in self.pools.values() for call in p._calls.values()}
        refs |= {ex[0] for b in self.open for ex in b.examples.values()}
        sizes = ray.experimental.get_object_locations(list(refs)) if refs else {}
        self.samples.append({
            "depth": {q.name: q.depth for q in self.queues.values()},
            "reserved": {q.name: q.reserved for q in self.queues.values()},
            "waiting": sum(len(b.examples) for b in self.open),
            "in_flight": {name: p.in_flight() for name, p in self.pools.items()},
            "free_slots": {name: p.free_slots() for name, p in self.pools.items()},
            "training": self.training is not None,
            "open_complete": all(b.complete() for b in self.open) and bool(self.open),
            "held_records": sum(q.depth + q.reserved for q in self.queues.values())
            + sum(len(b.examples) for b in self.open) + sum(len(c.ids) for p in self.pools.values()
                                                            for c in p._calls.values()),
            "bytes": sum(v.get("object_size") or 0 for v in sizes.values()),  # None: not made yet
        })


def _run(setup, name: str, slow_learner: float = 0.0, slow_editor: float = 0.0, **train) -> Watched:
    cfg = setup.config(name, train={"steps": 4, "batch_size": BATCH, "queue_capacity": CAPACITY,
                                    "chunk_size": CHUNK, "checkpoint_every": 100, "logprob_check_every": 0,
                                    **train}, guard={"every": 0})
    records = load_train_records(cfg, setup.data_dir)
    fleet = Fleet(cfg, setup.model_dir)
    try:
        if slow_learner:
            start = fleet.start_step

            def late_start(items, version):
                for rank in fleet.learners.ranks:
                    rank.__ray_call__.remote(_sleep(slow_learner))
                return start(items, version)
            fleet.start_step = late_start
        if slow_editor:
            submit = fleet.editor.submit

            def late_submit(ids, *args):
                for editor in fleet.editor.actors:
                    editor.__ray_call__.remote(_sleep(slow_editor))
                return submit(ids, *args)
            fleet.editor.submit = late_submit
        driver = Watched(cfg, records, fleet)
        driver.run()
    finally:
        fleet.shutdown()
    return driver


def _within_bounds(driver: Watched) -> None:
    assert driver.samples, "the driver's loop never turned"
    for s in driver.samples:
        for name in STAGES:
            assert s["depth"][name] + s["reserved"][name] <= CAPACITY, s
        assert s["waiting"] <= driver.window, s
    assert all(h["pairs"] == BATCH for h in driver.history)  # exactly the batch, every step
    assert driver.ledger.lost() == []


def test_a_slow_learner_throttles_the_pipeline_and_bounds_what_it_holds(pipeline_setup, pipeline_ray):
    driver = _run(pipeline_setup, "slow-learner", slow_learner=4.0, max_staleness=1)
    _within_bounds(driver)
    # The next step filled up while the learner trained, and then nothing more was pulled in: every stage
    # idle, no prompt waiting, the learner still busy. That is the learner throttling the rollouts.
    throttled = [s for s in driver.samples if s["training"] and s["open_complete"]
                 and not any(s["in_flight"].values()) and not any(s["depth"].values())]
    assert throttled, "the pipeline never waited for the learner"
    # What the pipeline holds is bounded by the queues and the step window, not by the run's length.
    bound = 3 * CAPACITY + driver.window + sum(p.max_in_flight * len(p.actors) * CHUNK for p in driver.pools.values())
    assert max(s["held_records"] for s in driver.samples) <= bound
    half = len(driver.samples) // 2
    early, late = (max(s["bytes"] for s in part) for part in (driver.samples[:half], driver.samples[half:]))
    assert 0 < late <= 2 * early, (early, late)  # no growth with the steps trained
    assert 0 < max(h["stage_overlap"] for h in driver.history) <= 1  # stages ran at once somewhere


def test_a_slow_editor_makes_the_rollouts_wait(pipeline_setup, pipeline_ray):
    # Two open steps (8 prompts) against the editor's 2 calls in flight and its queue of 2.
    driver = _run(pipeline_setup, "slow-editor", slow_editor=1.5, max_staleness=1)
    _within_bounds(driver)
    editor_q = driver.queues["editor"]
    assert editor_q.max_depth == CAPACITY and editor_q.blocked > 0
    # Prompts were waiting and the engine had a free slot, but the editor's queue was full: rollouts waited.
    waited = [s for s in driver.samples if s["depth"]["rollout"] > 0 and s["free_slots"]["rollout"] > 0
              and s["depth"]["editor"] + s["reserved"]["editor"] == CAPACITY]
    assert waited, "no rollout ever waited for the editor"
