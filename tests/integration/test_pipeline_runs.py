"""`medpo-ray train` end to end on a local Ray: the ledger of a strict run, a bounded-async run, and a run
that loses its rollout engine and span editor mid-call (restarted, records re-issued) and then a learner
rank (the run stops naming its checkpoint), resumed with --resume to exactly what the uninterrupted run
trained, sample by sample and weight by weight.

Every run is the real thing: vLLM rollouts, the reference critic's span edits, lesion corruption and two
DeepSpeed ranks (gloo). The records are reproducible (step-bounded warm start, greedy decoding), which
is what makes the comparison exact. Stage actors are killed while one of their calls is in flight for
sure: the process is SIGSTOPped first, and killed only while the driver still waits for its answer. A
restarted engine must serve the current weights: had it served the warm start, its answers would be a
version too old and strict mode would drop them as stale.
"""
from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
import ray
from safetensors.torch import load_file

from actors.fleet import Fleet
from driver.cli import main
from driver.loop import METRICS_FILE, STATE_FILE, Driver, RunStopped
from medpo_ray.critics import counterfactual_balance
from medpo_ray.data.splits import load_probe_records, load_train_records
from medpo_ray.ledger import Ledger

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS, BATCH = 4, 4
# fp32 noise of the same computation in other processes; the weights move by ~2e-5 in these runs.
WEIGHT_TOL = 1e-6
WAIT_S = 180  # for any one thing the saboteur waits on (an engine restart takes ~10 s on 2 idle cores)


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


def _audit(summary: dict):
    import pandas as pd

    return pd.read_parquet(summary["audit"]).sort_values(["step", "record_id"]).reset_index(drop=True)


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
    # The audit trail: one row per issued prompt, trained or dropped with the ledger's reason.
    audit = _audit(uninterrupted)
    assert sorted(audit.record_id) == sorted(ledger.issued) and audit.record_id.is_unique
    assert sorted(audit[audit.trained].record_id) == sorted(ledger.trained)
    dropped = audit[~audit.trained].set_index("record_id").rejection.to_dict()
    assert dropped == ledger.dropped
    pairs = audit[audit.trained]
    assert pairs.y_plus.notna().all() and pairs.branch.isin(["A", "B"]).all() and (pairs.critic == "reference").all()
    assert ((pairs.branch == "A") == (pairs.y0 == pairs.y_minus)).all()  # branch A corrects y0
    # What each trained pair's x~ is: the lesion mask's region, boxes, or whole-image noise without either.
    assert pairs.corruption_region.isin(["mask", "boxes", "whole"]).all() and pairs.corruption_mode.notna().all()


def test_the_engines_serve_exactly_the_weights_the_learner_trains_from(pipeline_setup, uninterrupted):
    # Before each step the learner scored rollouts of that step with its own policy forward: vLLM's
    # log-probs agree to fp32 noise, so every weight sync delivered the learner's weights.
    steps = _steps(Path(pipeline_setup.recipe("strict")["run"]["out_dir"]))
    assert all(s["logprob_check_tokens"] > 0 for s in steps)
    gaps = [s["logprob_mismatch"] for s in steps]
    print("vLLM vs learner log-prob gap per step:", gaps)
    assert max(gaps) < 1e-4
    assert uninterrupted["weight_transport"] == "shared_memory"  # auto, all on one node
    assert not list(Path("/dev/shm").glob("medpo-weights-*"))  # the group deleted its buffer at shutdown
    assert all(s["pairs"] == BATCH and s["staleness_max"] == 0 for s in steps)  # strict: on-policy
    # The driver queues each step's rollouts behind the engines' weight loads without waiting for them:
    # none ran on the previous weights (strict mode would have dropped and replaced it as stale).
    ledger, _ = _final_state(uninterrupted)
    assert "staleness:stale" not in ledger.dropped.values()


def test_the_guard_probes_the_warm_start_and_the_last_step_and_logs_the_evidence(pipeline_setup, uninterrupted):
    out = Path(pipeline_setup.recipe("strict")["run"]["out_dir"])
    probes = uninterrupted["probes"]
    assert [p["step"] for p in probes] == [0, STEPS]  # guard.every (25) > STEPS: the start and the end
    assert all(p["answers"] > 0 and p["edits_per_answer"] >= 0 for p in probes)
    assert probes[0]["max_token_drop"] == 0 and not probes[0]["regressed"]
    best = uninterrupted["best_step"]
    assert best in (0, STEPS)
    if best:
        assert (out / "checkpoints" / "best").read_text() == f"step-{best:06d}"
        assert uninterrupted["best_model"].endswith(f"step-{best:06d}/model")
    else:
        assert uninterrupted["best_model"] == pipeline_setup.model_dir
    steps = _steps(out)
    assert steps[-1]["probe_edits_per_answer"] == probes[-1]["edits_per_answer"]
    # Which tokens each step pushed down (y-) and up (y+), and what kind of pair each example was.
    for s in steps:
        assert sum(s["pair_kinds"].values()) == BATCH
        assert all(k[:2] in ("A:", "B:") for k in s["pair_kinds"])
        assert sum(s["tokens_down"].values()) > 0 and sum(s["tokens_up"].values()) > 0
    b_keys = [k for s in steps for k in s["pair_kinds"] if k.startswith("B:")]
    assert all(":" in k[2:] for k in b_keys)  # a branch-B pair names its counterfactual's balance key


def test_offline_gold_reference_dpo_trains_on_the_warm_starts_answers(pipeline_setup, pipeline_ray):
    # The static-reference baseline: y+ = the dataset's answer, y- = the warm start's own answer, engines
    # never updated (every sample from policy version 0, none dropped as stale), no guard probe.
    summary = _train(pipeline_setup, "offline", train={"on_policy": False, "steps": 2, "checkpoint_every": 2},
                     critic={"backend": "gold"}, loss={"preset": "dpo"})
    assert summary["steps"] == 2 and summary["trained"] == 2 * BATCH and summary["lost"] == 0
    assert "probes" not in summary
    steps = _steps(Path(pipeline_setup.recipe("offline")["run"]["out_dir"]))
    assert [s["staleness_max"] for s in steps] == [0, 1]
    assert all(set(s["pair_kinds"]) == {"A:reference"} for s in steps)


def test_bounded_async_trains_every_step_on_samples_at_most_one_version_old(pipeline_setup, pipeline_ray):
    # The weights go through the object store here (the transport for engines on other nodes).
    summary = _train(pipeline_setup, "async", train={"max_staleness": 1}, rollout={"weight_transport": "object_store"})
    assert summary["steps"] == STEPS and summary["trained"] == STEPS * BATCH and summary["lost"] == 0
    assert summary["weight_transport"] == "object_store"
    steps = _steps(Path(pipeline_setup.recipe("async")["run"]["out_dir"]))
    assert [s["pairs"] for s in steps] == [BATCH] * STEPS
    assert all(s["staleness_max"] <= 1 for s in steps)
    # Step 2's prompts were generated by version 0 while step 1 trained: the overlap really happened.
    assert steps[1]["staleness_max"] == 1
    ledger, _ = _final_state(summary)
    assert ledger.lost() == [] and len(set(ledger.trained)) == STEPS * BATCH
    assert "staleness:stale" not in ledger.dropped.values()


def _pid(actor) -> int:
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))


def _until(what: str, probe, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"saboteur: gave up waiting for {what}")
        time.sleep(0.01)


class Saboteur(threading.Thread):
    """Kills the rollout engine and then the span editor mid-call in step 2, and a learner rank once step 3
    is done (the last checkpoint is step 2's)."""

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
            # After step 3 is logged and before step 4's checkpoint: the resumed run must redo step 3.
            _until("step 3", lambda: len(self.driver.history) == 3)
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
    records = load_train_records(cfg, pipeline_setup.data_dir)
    balance = counterfactual_balance(cfg, records)  # as `medpo-ray train` builds its run
    fleet = Fleet(cfg, pipeline_setup.model_dir, keep_rates=balance.rates())
    try:
        driver = Driver(cfg, records, fleet, balance=balance,
                        probe_records=load_probe_records(cfg, pipeline_setup.data_dir))
        saboteur = Saboteur(driver, fleet)
        saboteur.start()
        try:
            driver.run()
            stopped = None
        except RunStopped as e:
            stopped = e
        saboteur.join(timeout=10)
        assert saboteur.error is None, saboteur.error
        assert stopped is not None, "the run went on without a learner rank"
        engine = fleet.rollout_actors[0]
        after = {"pid": _pid(engine), "version": ray.get(engine.policy_version.remote())}
    finally:
        fleet.shutdown()  # its CPUs are needed by the resumed run
    return driver, stopped, saboteur.pids, after


@pytest.mark.faults
def test_killed_stage_actors_are_restarted_and_their_records_reissued(sabotaged):
    driver, _, pids, engine = sabotaged
    ledger = driver.ledger
    assert ledger.reissued["rollout"] >= 1 and ledger.reissued["editor"] >= 1
    assert driver.fleet.rollout.restarts >= 1 and driver.fleet.editor.restarts >= 1
    assert engine["pid"] != pids["rollout"] and engine["version"] == 3
    # Nothing lost, nothing trained twice; step 4's records were somewhere in flight when the run stopped.
    assert ledger.lost() == []
    assert len(ledger.trained) == len(set(ledger.trained)) == 3 * BATCH
    in_flight = {k for ids in ledger.in_flight.values() for k in ids}
    assert set(ledger.trained) | set(ledger.dropped) | in_flight == ledger.issued
    # The restarted engine got the current weights before its re-issued call: no answer came back stale
    # (the only drops are the critic's abstentions, e.g. a counterfactual thinned for balance).
    assert all(code.startswith("editor:") for code in ledger.dropped.values()), ledger.dropped
    assert [s["staleness_max"] for s in driver.history] == [0, 0, 0]


@pytest.mark.faults
def test_a_killed_learner_stops_the_run_and_resume_trains_what_the_uninterrupted_run_trained(
        sabotaged, pipeline_setup, uninterrupted):
    driver, error, _, _ = sabotaged
    out = Path(pipeline_setup.recipe("faults")["run"]["out_dir"])
    # Rank 1 was killed; rank 0 may report first (its collective with rank 1 broke).
    assert re.match(r"learner rank [01] failed: ", str(error))
    assert f"the last checkpoint is {out / 'checkpoints' / 'step-000002'}: rerun with --resume" in str(error)
    assert driver.step == 3 and len(_steps(out)) == 3  # step 3 trained, logged, but not checkpointed

    resumed = _train(pipeline_setup, "faults", "--resume")
    assert resumed["steps"] == STEPS and resumed["trained"] == STEPS * BATCH and resumed["lost"] == 0
    assert resumed["reissued"]["rollout"] >= 1 and resumed["reissued"]["editor"] >= 1  # kept by the checkpoint
    ledger, _ = _final_state(resumed)
    assert len(set(ledger.trained)) == len(ledger.trained)
    # Faults and a resume change nothing: the same samples in every step, the same weights.
    expected = _steps(Path(pipeline_setup.recipe("strict")["run"]["out_dir"]))
    assert [s["step"] for s in _steps(out)] == list(range(1, STEPS + 1))
    assert [s["keys"] for s in _steps(out)] == [s["keys"] for s in expected]
    assert ledger.trained == _final_state(uninterrupted)[0].trained
    # The audit trail survives the kill and the resume: the same rows as the uninterrupted run's.
    cols = ["step", "record_id", "trained", "rejection", "y0", "y_plus", "y_minus", "branch"]
    assert _audit(resumed)[cols].equals(_audit(uninterrupted)[cols])
    base, straight, after = (load_file(Path(pipeline_setup.model_dir) / "model.safetensors"),
                             _weights(uninterrupted), _weights(resumed))
    assert set(after) == set(straight)
    gap = max((after[k] - straight[k]).abs().max().item() for k in straight)
    moved = max((straight[k] - base[k]).abs().max().item() for k in straight)
    print(f"resume: max |resumed - uninterrupted| = {gap:.3g}, max |trained - warm start| = {moved:.3g}")
    assert gap <= WEIGHT_TOL < moved / 10
