"""`medpo-ray train` end to end on a local Ray: the ledger of a strict run, a killed-and-resumed run that
trains exactly what the uninterrupted one trained, and a bounded-async run.

Every run is the real thing: vLLM rollouts, the reference critic's span edits, lesion corruption and two
DeepSpeed ranks (gloo). The records are reproducible (step-bounded warm start, greedy decoding), so the
resumed run can be compared with the uninterrupted one sample by sample and weight by weight.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from safetensors.torch import load_file

from medpo_ray.cli import main
from medpo_ray.ledger import Ledger
from medpo_ray.pipeline import METRICS_FILE, STATE_FILE
from tests.integration.promstack import free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS, BATCH = 4, 4
# fp32 noise of the same computation in other processes; the weights move by ~1e-4 in these runs.
WEIGHT_TOL = 1e-6


def _train(setup, name: str, *args: str, **sections) -> dict:
    """Run `medpo-ray train` in this process (Ray already up); its summary."""
    path = setup.write(name, **sections)
    assert main(["train", "--config", str(path), *args]) == 0
    out = Path(setup.recipe(name)["run"]["out_dir"])
    return json.loads((out / "summary.json").read_text())


def _steps(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / METRICS_FILE).read_text().splitlines()]


def _final_state(summary: dict) -> tuple[Ledger, dict]:
    state = json.loads((Path(summary["checkpoint"]) / STATE_FILE).read_text())
    return Ledger.from_json(state["ledger"]), state


def _weights(summary: dict) -> dict:
    return load_file(Path(summary["checkpoint"]) / "model" / "model.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(pipeline_setup, pipeline_ray):
    """A strict run of STEPS steps, checkpointing every 2."""
    return _train(pipeline_setup, "strict")


def test_every_issued_sample_is_trained_once_or_accounted_for(pipeline_setup, uninterrupted):
    ledger, state = _final_state(uninterrupted)
    assert state["step"] == STEPS and state["in_flight"] == []
    assert ledger.lost() == []
    assert len(ledger.trained) == len(set(ledger.trained)) == STEPS * BATCH
    in_flight = {k for ids in ledger.in_flight.values() for k in ids}
    assert set(ledger.trained) | set(ledger.dropped) | in_flight == ledger.issued
    assert not set(ledger.trained) & set(ledger.dropped)
    # summary.json says what the ledger says.
    assert {k: uninterrupted[k] for k in ("issued", "trained", "dropped", "in_flight", "reissued", "lost")} \
        == ledger.summary()
    steps = _steps(Path(pipeline_setup.recipe("strict")["run"]["out_dir"]))
    assert [s["step"] for s in steps] == list(range(1, STEPS + 1))
    assert [k for s in steps for k in s["keys"]] == ledger.trained
    assert all(s["pairs"] == BATCH and s["staleness_max"] == 0 for s in steps)  # strict: on-policy


def test_a_run_killed_after_its_checkpoint_resumes_to_the_same_samples_and_weights(pipeline_setup, uninterrupted):
    # The first run is a separate `medpo-ray train` process (its own local Ray), SIGKILLed with its whole
    # process tree as soon as its step-2 checkpoint is complete; the rerun with --resume has nothing else.
    config = pipeline_setup.write("resumed")
    out = Path(pipeline_setup.recipe("resumed")["run"]["out_dir"])
    log = pipeline_setup.root / "killed-run.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "medpo_ray.cli", "train", "--config", str(config),
                                 "--set", f"metrics.export_port={free_port()}"],
                                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def at_step_2() -> bool:
            assert proc.poll() is None, f"the run ended before its kill:\n{log.read_text()[-3000:]}"
            latest = out / "checkpoints" / "latest"
            return latest.exists() and latest.read_text() == "step-000002"
        wait_until("the first run's step-2 checkpoint", at_step_2, timeout_s=300, interval_s=0.05)
    finally:
        driver = psutil.Process(proc.pid)
        tree = [driver, *driver.children(recursive=True)]  # its Ray: GCS, raylet, workers, actors
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(tree, timeout=10)
        proc.wait(timeout=10)
    assert not (out / "summary.json").exists()

    resumed = _train(pipeline_setup, "resumed", "--resume")
    assert resumed["steps"] == STEPS and resumed["lost"] == 0
    expected = _steps(Path(pipeline_setup.recipe("strict")["run"]["out_dir"]))
    assert [s["keys"] for s in _steps(out)] == [s["keys"] for s in expected]
    ledger, _ = _final_state(resumed)
    assert ledger.trained == _final_state(uninterrupted)[0].trained
    assert len(set(ledger.trained)) == len(ledger.trained)

    base, straight, after = (load_file(Path(pipeline_setup.model_dir) / "model.safetensors"),
                             _weights(uninterrupted), _weights(resumed))
    assert set(after) == set(straight)
    gap = max((after[k] - straight[k]).abs().max().item() for k in straight)
    moved = max((straight[k] - base[k]).abs().max().item() for k in straight)
    print(f"resume: max |resumed - uninterrupted| = {gap:.3g}, max |trained - warm start| = {moved:.3g}")
    assert gap <= WEIGHT_TOL < moved / 10


def test_bounded_async_trains_every_step_on_samples_at_most_one_version_old(pipeline_setup, pipeline_ray):
    summary = _train(pipeline_setup, "async", train={"max_staleness": 1})
    assert summary["steps"] == STEPS and summary["trained"] == STEPS * BATCH and summary["lost"] == 0
    steps = _steps(Path(pipeline_setup.recipe("async")["run"]["out_dir"]))
    assert [s["pairs"] for s in steps] == [BATCH] * STEPS
    assert all(s["staleness_max"] <= 1 for s in steps)
    # Step 2's prompts were generated by version 0 while step 1 trained: the overlap really happened.
    assert steps[1]["staleness_max"] == 1
    ledger, _ = _final_state(summary)
    assert ledger.lost() == [] and len(set(ledger.trained)) == STEPS * BATCH
    assert "staleness:stale" not in ledger.dropped.values()
