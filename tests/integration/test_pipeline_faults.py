"""Runs that cannot proceed stop with one clear line: an unreachable critic (before anything starts), a
weight load that hangs (the engine and the checkpoint are named), an engine that cannot load the model, a
checkpoint disk that fills up (the last complete checkpoint is named and `--resume` finishes from it).
Critics that hang, answer garbage or die mid-run: test_critic_faults.py."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from driver.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]


def test_an_unreachable_critic_is_named_before_anything_starts(pipeline_setup, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    critic = {"backend": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": "critic"}
    t0 = time.monotonic()
    assert main(["train", "--config", str(pipeline_setup.write("no-critic", critic=critic))]) == 2
    err = capsys.readouterr().err
    assert f"critic.base_url 'http://127.0.0.1:{port}/v1' does not answer GET /models" in err
    assert time.monotonic() - t0 < 30  # no engine, editor or learner was started for it


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


def test_a_hung_weight_load_stops_the_run_naming_the_engine_and_the_checkpoint(pipeline_setup, pipeline_ray):
    # The engine is made to hang (a sleep queued on it, as a stuck load would block it) right when the last
    # step's weights are sent, so nothing but the load waits on it: the driver waits the rollout deadline,
    # no longer, and names the load. (Mid-run, the next rollouts queued behind a hung load stop the run
    # first, as a hung rollout stage.)
    from actors.fleet import Fleet
    from driver.loop import Driver, RunStopped
    from medpo_ray.data.splits import load_train_records

    cfg = pipeline_setup.config("hung-load", train={"steps": 3, "checkpoint_every": 1, "logprob_check_every": 0,
                                                    "stage_deadlines": {"rollout": 20}}, guard={"every": 0})
    fleet = Fleet(cfg, pipeline_setup.model_dir)
    start = fleet._start_sync

    def hang_on_last(version):
        if version == 3:
            for engine in fleet.rollout_actors:
                engine.__ray_call__.remote(lambda _self: time.sleep(120))
        return start(version)
    fleet._start_sync = hang_on_last
    t0 = time.monotonic()
    try:
        with pytest.raises(RunStopped) as stopped:
            Driver(cfg, load_train_records(cfg, pipeline_setup.data_dir), fleet).run()
    finally:
        fleet.shutdown()
    msg = str(stopped.value)
    assert "engine 0 did not load policy version 3 within 20 s" in msg and "the weight load is hung" in msg
    assert "step-000003" in msg and "--resume" in msg  # the checkpoint a resume continues from
    assert time.monotonic() - t0 < 120  # the deadline, not the hang, ended the wait


@pytest.fixture
def small_disk(tmp_path):
    """A run directory whose checkpoints/ is a 64 MiB tmpfs of its own (as a full PVC would be); unmounted after."""
    if os.geteuid() != 0:
        pytest.fail("the full-disk test mounts a tmpfs: run it as root (as CI does) or in `unshare -rm`")
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(out / "checkpoints")], check=True)
    try:
        yield out
    finally:
        subprocess.run(["umount", "-l", str(out / "checkpoints")], check=False)


def _fill_after(latest: Path, step: str, filler: Path) -> threading.Thread:
    """A thread that waits for `latest` to name `step`, then fills the disk `filler` is on to the last byte."""
    def fill() -> None:
        deadline = time.monotonic() + 300
        while not (latest.exists() and latest.read_text().strip() == step) and time.monotonic() < deadline:
            time.sleep(0.05)
        with filler.open("wb") as f:
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:  # ENOSPC: the disk is full
                pass
    thread = threading.Thread(target=fill, daemon=True)
    thread.start()
    return thread


def test_a_full_checkpoint_disk_stops_the_run_naming_the_last_checkpoint_and_resume_finishes(
        pipeline_setup, pipeline_ray, small_disk, capsys):
    from driver.loop import STATE_FILE
    from medpo_ray.ledger import Ledger

    ckpts = small_disk / "checkpoints"
    config = pipeline_setup.write("full-disk", run={"out_dir": str(small_disk)}, guard={"every": 0})
    filler = _fill_after(ckpts / "latest", "step-000002", ckpts / "filler")
    assert main(["train", "--config", str(config)]) == 2
    filler.join(timeout=10)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "No space left on device" in err and "step-000004" in err, err
    assert f"the last checkpoint is {ckpts / 'step-000002'}" in err and "--resume" in err, err
    assert (ckpts / "latest").read_text().strip() == "step-000002"  # the incomplete one is not 'latest'

    (ckpts / "filler").unlink()  # space freed, as an operator would
    assert main(["train", "--config", str(config), "--resume"]) == 0
    summary = json.loads((small_disk / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["lost"] == 0
    ledger = Ledger.from_json(json.loads((ckpts / "step-000004" / STATE_FILE).read_text())["ledger"])
    assert ledger.lost() == [] and len(ledger.trained) == len(set(ledger.trained)) == 16
