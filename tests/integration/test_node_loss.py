"""A Ray node removed mid-run, on a two-node cluster on this machine (`ray.cluster_utils.Cluster`).

The learner ranks are spread one per node (`train.placement_strategy: STRICT_SPREAD`, what a multi-node
learner group uses), so removing the worker node after step 2's checkpoint takes a learner rank (and any
stage actor Ray put there) with it. The run must stop naming the last checkpoint, not hang; once a
replacement node joins, `--resume` finishes the run with nothing lost and nothing trained twice.
"""
from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from driver.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]

# Both nodes are processes of this machine (Ray wants whole CPUs). Each holds one learner rank; Ray places
# the rollout engine and the light actors wherever there is room.
HEAD_CPUS, WORKER_CPUS = 3, 2
# Detect a dead node in ~3 s instead of Ray's default ~15-30 s.
FAST_FAILURE_DETECTION = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}


@pytest.fixture(scope="module")
def two_nodes():
    """A head and one worker node, both on loopback; the test's process is the driver."""
    import ray
    from ray.cluster_utils import Cluster

    from actors.loopback import loopback_only

    loopback_only()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": HEAD_CPUS, "object_store_memory": 512 << 20, "include_dashboard": False,
        "_system_config": FAST_FAILURE_DETECTION})
    worker = cluster.add_node(num_cpus=WORKER_CPUS, object_store_memory=256 << 20)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    try:
        yield cluster, worker
    finally:
        ray.shutdown()
        cluster.shutdown()


def _remove_after(cluster, node, latest: Path, step: str) -> threading.Thread:
    """A thread that removes `node` from `cluster` once `latest` names `step` (that checkpoint is complete)."""
    def remove() -> None:
        deadline = time.monotonic() + 300
        while not (latest.exists() and latest.read_text().strip() == step) and time.monotonic() < deadline:
            time.sleep(0.05)
        cluster.remove_node(node, allow_graceful=False)
    thread = threading.Thread(target=remove, daemon=True)
    thread.start()
    return thread


def test_a_removed_node_stops_the_run_naming_the_checkpoint_and_resume_finishes(pipeline_setup, two_nodes, capsys):
    import ray

    from driver.loop import STATE_FILE
    from medpo_ray.ledger import Ledger

    cluster, worker = two_nodes
    config = pipeline_setup.write("node-loss", train={"placement_strategy": "STRICT_SPREAD"}, guard={"every": 0})
    out = Path(pipeline_setup.recipe("node-loss")["run"]["out_dir"])
    ckpts = out / "checkpoints"
    remover = _remove_after(cluster, worker, ckpts / "latest", "step-000002")
    t0 = time.monotonic()
    assert main(["train", "--config", str(config)]) == 2
    remover.join(timeout=10)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(r"learner rank [01] failed", err), err  # the rank that lived on the removed node
    assert f"the last checkpoint is {ckpts / 'step-000002'}" in err and "--resume" in err, err
    assert time.monotonic() - t0 < 240  # stopped by the failure, not by a deadline
    assert len([n for n in ray.nodes() if n["Alive"]]) == 1

    cluster.add_node(num_cpus=WORKER_CPUS, object_store_memory=256 << 20)  # a replacement node joins
    cluster.wait_for_nodes()
    assert main(["train", "--config", str(config), "--resume"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["lost"] == 0
    ledger = Ledger.from_json(json.loads((ckpts / "step-000004" / STATE_FILE).read_text())["ledger"])
    assert ledger.lost() == [] and len(ledger.trained) == len(set(ledger.trained)) == 16
