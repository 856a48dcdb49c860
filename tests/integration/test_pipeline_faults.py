"""Runs that cannot proceed stop with one clear line: an unreachable critic (before anything starts), a
weight load that hangs (the engine and the checkpoint are named), an engine that cannot load the model.
Critics that hang, answer garbage or die mid-run: test_critic_faults.py."""
from __future__ import annotations

import json
import shutil
import socket
import time

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
