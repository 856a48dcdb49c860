"""Faults during a real run: SIGKILLed rollout and editor actors, a SIGKILLed learner rank, a hung critic, an
engine that cannot start.

The stage actors are killed while one of their calls is in flight for sure: the process is SIGSTOPped
first, and killed only while the driver still waits for its answer. Ray restarts them, the stage pool
re-issues their records, and a restarted engine must serve the current weights: if it served the warm
start, its answers would be a version too old and strict mode would drop them as stale.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import ray

from actors.fleet import Fleet
from medpo_ray.cli import main
from medpo_ray.ledger import Ledger
from medpo_ray.pipeline import METRICS_FILE, STATE_FILE, Driver, RunStopped, load_train_records

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS, BATCH = 4, 4
WAIT_S = 180  # for any one thing the saboteur waits on (an engine restart takes ~10 s on 2 idle cores)


def _pid(actor) -> int:
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))


def _until(what: str, probe, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"saboteur: gave up waiting for {what}")
        time.sleep(0.01)


class Saboteur(threading.Thread):
    """Kills the rollout engine and then the span editor mid-call in step 2, and a learner rank right after
    the step-2 checkpoint."""

    def __init__(self, driver: Driver, fleet: Fleet):
        super().__init__(daemon=True)
        self.driver, self.fleet = driver, fleet
        # Asked before the run: an actor runs one call at a time, so it could not answer during a call.
        self.pids = {"rollout": _pid(fleet.rollout_actors[0]), "editor": _pid(fleet.editor.actors[0]),
                     "learner": _pid(fleet.learners.ranks[1])}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._kill_mid_call("rollout", self.fleet.rollout)
            # The re-issued rollout waits for the restarted engine: the editor is stopped before its call
            # for this step exists, and killed once that call is on its way.
            os.kill(self.pids["editor"], signal.SIGSTOP)
            _until("an editor call", lambda: self.fleet.editor.in_flight() > 0)
            os.kill(self.pids["editor"], signal.SIGKILL)
            _until("the step-2 checkpoint", lambda: self.driver.last_checkpoint is not None
                   and self.driver.last_checkpoint.name == "step-000002")
            os.kill(self.pids["learner"], signal.SIGKILL)
        except BaseException as e:  # reported by the test, which runs the driver in the main thread
            self.error = e

    def _kill_mid_call(self, name: str, pool) -> None:
        while True:
            _until(f"a {name} call in step 2", lambda: self.driver.step >= 1 and pool.in_flight() > 0)
            os.kill(self.pids[name], signal.SIGSTOP)
            refs = pool.wait_refs()
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0) if refs else ([None], [])
            if not ready:  # stopped with its answer still owed: the kill lands mid-call
                os.kill(self.pids[name], signal.SIGKILL)
                return
            os.kill(self.pids[name], signal.SIGCONT)  # it had just answered; try the next call
            _until(f"the {name} answer to be collected", lambda: pool.in_flight() == 0)


@pytest.fixture(scope="module")
def sabotaged(pipeline_setup, pipeline_ray):
    """A strict run of STEPS steps that loses its rollout engine, its editor and a learner rank."""
    cfg = pipeline_setup.config("faults")
    fleet = Fleet(cfg, pipeline_setup.model_dir)
    try:
        driver = Driver(cfg, load_train_records(cfg, pipeline_setup.data_dir), fleet)
        saboteur = Saboteur(driver, fleet)
        saboteur.start()
        with pytest.raises(RunStopped) as stopped:
            driver.run()
        saboteur.join(timeout=10)
        assert saboteur.error is None, saboteur.error
        engine = fleet.rollout_actors[0]
        after = {"pid": _pid(engine), "version": ray.get(engine.policy_version.remote())}
    finally:
        fleet.shutdown()  # its CPUs are needed by the resumed run
    return driver, stopped.value, saboteur.pids, after


def test_killed_stage_actors_are_restarted_and_their_records_reissued(sabotaged):
    driver, _, pids, engine = sabotaged
    ledger = driver.ledger
    assert ledger.reissued["rollout"] >= 1 and ledger.reissued["editor"] >= 1
    assert driver.fleet.rollout.restarts >= 1 and driver.fleet.editor.restarts >= 1
    assert engine["pid"] != pids["rollout"] and engine["version"] == 2
    # Nothing lost, nothing trained twice; step 3's records were somewhere in flight when the run stopped.
    assert ledger.lost() == []
    assert len(ledger.trained) == len(set(ledger.trained)) == 2 * BATCH
    in_flight = {k for ids in ledger.in_flight.values() for k in ids}
    assert set(ledger.trained) | set(ledger.dropped) | in_flight == ledger.issued
    # The restarted engine got the current weights before its re-issued call: no answer came back stale.
    assert not ledger.dropped
    assert [s["staleness_max"] for s in driver.history] == [0, 0]


def test_a_killed_learner_stops_the_run_and_resume_continues_from_its_checkpoint(sabotaged, pipeline_setup, capsys):
    driver, error, _, _ = sabotaged
    ckpt = Path(pipeline_setup.recipe("faults")["run"]["out_dir"]) / "checkpoints" / "step-000002"
    assert "learner rank 1 failed" in str(error)
    assert f"the last checkpoint is {ckpt}: rerun with --resume" in str(error)
    assert driver.step == 2

    config = pipeline_setup.write("faults")
    assert main(["train", "--config", str(config), "--resume"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == STEPS and summary["trained"] == STEPS * BATCH and summary["lost"] == 0
    assert summary["reissued"]["rollout"] >= 1 and summary["reissued"]["editor"] >= 1  # kept by the checkpoint
    ledger = Ledger.from_json(json.loads((Path(summary["checkpoint"]) / STATE_FILE).read_text())["ledger"])
    assert len(set(ledger.trained)) == STEPS * BATCH and ledger.trained[:2 * BATCH] == driver.ledger.trained
    steps = [json.loads(x)["step"] for x in (ckpt.parents[1] / METRICS_FILE).read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))


def test_a_hung_critic_stops_the_run_naming_the_editor_stage(pipeline_setup, pipeline_ray, capsys):
    # A real endpoint that accepts connections and never answers; the critic would wait 10 minutes.
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        critic = {"backend": "openai", "base_url": f"http://127.0.0.1:{hung.getsockname()[1]}/v1",
                  "model": "critic", "timeout_s": 600, "max_retries": 0}
        config = pipeline_setup.write("hung", critic=critic, train={"stage_deadline_s": 6})
        assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "stage 'editor'" in err and "deadline 6 s" in err and "the stage is hung" in err
    assert "no checkpoint was written yet" in err


def test_an_engine_that_cannot_load_the_model_is_a_clear_error(pipeline_setup, pipeline_ray, tmp_path, capsys):
    bad = tmp_path / "bad-model"
    shutil.copytree(pipeline_setup.model_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    config["text_config"]["hidden_size"] //= 2  # the weights on disk no longer fit the model vLLM builds
    (bad / "config.json").write_text(json.dumps(config))
    t0 = time.monotonic()
    assert main(["train", "--config", str(pipeline_setup.write("bad-model", model={"path": str(bad)}))]) == 2
    err = capsys.readouterr().err
    assert f"rollout engine could not start from {bad}" in err and "Traceback" not in err
    print(f"bad model dir reported in {time.monotonic() - t0:.1f} s")
