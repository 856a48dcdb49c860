"""Runs that cannot proceed stop with one clear line: a critic that hangs (the stage is named), a weight
load that hangs (the engine and the checkpoint are named), an engine that cannot load the model."""
from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from driver.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]


class _ListsThenHangs(BaseHTTPRequestHandler):
    """A real endpoint that lists its model (so the preflight passes) and never answers a chat request."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = json.dumps({"data": [{"id": "critic"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.server.stop.wait(120)


def test_a_hung_critic_stops_the_run_naming_the_editor_stage(pipeline_setup, pipeline_ray, capsys):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _ListsThenHangs)
    srv.daemon_threads, srv.stop = True, threading.Event()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        critic = {"backend": "openai", "base_url": f"http://127.0.0.1:{srv.server_port}/v1",
                  "model": "critic", "timeout_s": 600, "max_retries": 0}  # the critic would wait 10 minutes
        config = pipeline_setup.write("hung", critic=critic, train={"stage_deadlines": {"editor": 6}})
        assert main(["train", "--config", str(config)]) == 2
    finally:
        srv.stop.set()
        srv.shutdown()
        srv.server_close()
    err = capsys.readouterr().err
    assert "stage 'editor'" in err and "deadline 6 s" in err and "the stage is hung" in err
    assert "no checkpoint was written yet" in err


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
