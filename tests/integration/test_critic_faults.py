"""An LLM critic that goes wrong inside a real run, served by a real OpenAI-compatible HTTP server on
loopback: one that hangs, one that answers garbage for a whole step, and one that dies mid-run. The run stops naming the
critic's own reason codes and the checkpoint to resume from; `--resume` against a live critic finishes
with the ledger intact.

The server's verdicts are simple but real: for every answer it proposes the branch-B counterfactual
"yes" <-> "no" (the answer replaced whole), which the span editor checks and turns into a pair.
"""
from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from driver.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]

_ANSWER = re.compile(r"Model answer \(a JSON string[^\n]*\n(\".*\")\n")


class _Critic(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send({"data": [{"id": "critic"}]})

    def do_POST(self):
        srv = self.server
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if srv.hang:  # accepts the request, never answers
            srv.stop.wait(120)
            return
        with srv.lock:
            srv.answered += 1
            n = srv.answered
        if srv.garbage:
            content = "I think the answer looks fine, more or less."
        else:
            answer = json.loads(_ANSWER.search(payload["messages"][1]["content"]).group(1)).strip()
            new = "no" if answer.lower() != "no" else "yes"
            content = json.dumps({"verdict": "right", "reason": "counterfactual",
                                  "edits": [{"old": answer, "new": new, "kind": "presence"}]})
        self._send({"choices": [{"message": {"role": "assistant", "content": content}}]})
        if srv.die_after and n >= srv.die_after:
            # The server goes away mid-run: it stops serving and closes its socket (connections refused).
            threading.Thread(target=lambda: (srv.shutdown(), srv.server_close()), daemon=True).start()


def _serve(garbage: bool = False, die_after: int = 0, hang: bool = False) -> ThreadingHTTPServer:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Critic)
    srv.daemon_threads, srv.lock, srv.answered, srv.stop = True, threading.Lock(), 0, threading.Event()
    srv.garbage, srv.die_after, srv.hang = garbage, die_after, hang
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _critic(srv) -> dict:
    return {"backend": "openai", "base_url": f"http://127.0.0.1:{srv.server_port}/v1", "model": "critic",
            "timeout_s": 5, "max_retries": 0}


def test_a_hung_critic_stops_the_run_naming_the_editor_stage(pipeline_setup, pipeline_ray, capsys):
    # It lists its model (so the preflight passes) and never answers a chat request.
    srv = _serve(hang=True)
    try:
        critic = {**_critic(srv), "timeout_s": 600}  # the critic itself would wait 10 minutes
        config = pipeline_setup.write("hung", critic=critic, train={"stage_deadlines": {"editor": 6}})
        assert main(["train", "--config", str(config)]) == 2
    finally:
        srv.stop.set()
        srv.shutdown()
        srv.server_close()
    err = capsys.readouterr().err
    assert "stage 'editor'" in err and "deadline 6 s" in err and "the stage is hung" in err
    assert "no checkpoint was written yet" in err


def test_a_critic_answering_garbage_for_a_whole_step_stops_the_run_naming_its_reason(
        pipeline_setup, pipeline_ray, capsys):
    srv = _serve(garbage=True)
    try:
        config = pipeline_setup.write("garbage-critic", critic=_critic(srv), guard={"every": 0},
                                      train={"max_prompts_per_pair": 2})
        assert main(["train", "--config", str(config)]) == 2
    finally:
        srv.shutdown()
        srv.server_close()
    err = capsys.readouterr().err
    assert "the critic rejects almost everything" in err, err[-2000:]
    assert re.search(r"rejections: \{'editor:not_json': \d+\}", err), err[-2000:]  # its own code, and only it
    assert "no checkpoint was written yet" in err


def test_a_critic_that_dies_mid_run_stops_it_at_a_checkpoint_and_resume_finishes(
        pipeline_setup, pipeline_ray, capsys):
    train = {"steps": 4, "checkpoint_every": 1, "max_prompts_per_pair": 2}
    srv = _serve(die_after=2 * 4 + 4)  # enough answers for two steps of 4 pairs and a few top-ups
    try:
        config = pipeline_setup.write("dying-critic", critic=_critic(srv), guard={"every": 0}, train=train)
        assert main(["train", "--config", str(config)]) == 2
    finally:
        srv.server_close()
    err = capsys.readouterr().err
    out = Path(pipeline_setup.recipe("dying-critic")["run"]["out_dir"])
    assert "'editor:connection'" in err and "--resume" in err, err[-2000:]
    done = re.search(r"the last checkpoint is (\S+): rerun with --resume", err)
    assert done and Path(done.group(1)).parent == out / "checkpoints"

    srv = _serve()  # the critic is back (on another port: the recipe follows it)
    try:
        config = pipeline_setup.write("dying-critic", critic=_critic(srv), guard={"every": 0}, train=train)
        assert main(["train", "--config", str(config), "--resume"]) == 0
    finally:
        srv.shutdown()
        srv.server_close()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["trained"] == 16 and summary["lost"] == 0
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3, 4]
    keys = [k for s in steps for k in s["keys"]]
    assert len(keys) == len(set(keys)) == 16  # nothing trained twice across the failure and the resume
