"""The stage pool on a real local Ray: results, backpressure, re-issue after SIGKILL, deadline."""
import os
import signal
import time

import pytest
import ray

from actors.loopback import loopback_only
from actors.pool import StageError, StagePool
from medpo_ray.ledger import Ledger

pytestmark = pytest.mark.integration


@ray.remote(max_restarts=2, max_task_retries=0, num_cpus=0)
class Doubler:
    def pid(self):
        return os.getpid()

    def work(self, ids, values, delay=0.0):
        time.sleep(delay)
        return {"ids": ids, "n": len(values)}, [2 * v for v in values]


@pytest.fixture(scope="module")
def local_ray():
    loopback_only()  # every listener of the test cluster on 127.0.0.1
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


def _drain(pool, timeout=60):
    done, t0 = [], time.monotonic()
    while pool.in_flight():
        ready, _ = ray.wait(pool.wait_refs(), num_returns=1, timeout=1)
        done += pool.collect(ready)
        pool.check_deadline()
        assert time.monotonic() - t0 < timeout
    return done


def test_results_flow_and_backpressure(local_ray):
    ledger = Ledger()
    pool = StagePool("double", [Doubler.remote(), Doubler.remote()], "work", ledger, max_in_flight=1)
    ledger.issue(["a", "b"])
    pool.submit(["a"], ["a"], [1, 2])
    pool.submit(["b"], ["b"], [3])
    assert pool.free_slots() == 0
    done = _drain(pool)
    assert sorted(d.meta["n"] for d in done) == [1, 2]
    assert sorted(ray.get(d.payload) for d in done) == [[2, 4], [6]]
    assert ledger.pending("double") == [] and pool.free_slots() == 2


def test_sigkilled_actor_is_restarted_and_its_records_reissued(local_ray):
    ledger = Ledger()
    actor = Doubler.remote()
    restarted = []
    pool = StagePool("double", [actor], "work", ledger, max_in_flight=2,
                     on_restart=lambda a: restarted.append(a))
    pid = ray.get(actor.pid.remote())  # before the long call: the actor runs one call at a time
    ledger.issue(["x"])
    pool.submit(["x"], ["x"], [5], 5.0)  # long call, killed mid-way
    time.sleep(1.0)
    os.kill(pid, signal.SIGKILL)
    done = _drain(pool)
    assert [ray.get(d.payload) for d in done] == [[10]]
    assert restarted == [actor] and pool.restarts == 1 and ledger.reissued["double"] == 1
    assert ledger.pending("double") == []


def test_hung_stage_is_reported_by_name(local_ray):
    ledger = Ledger()
    pool = StagePool("critic", [Doubler.remote()], "work", ledger, deadline_s=0.5)
    ledger.issue(["h"])
    pool.submit(["h"], ["h"], [1], 30.0)
    with pytest.raises(StageError, match=r"stage 'critic'.*deadline.*\['h'\]"):
        _drain(pool)
