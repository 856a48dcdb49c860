"""Runs that cannot proceed stop with one clear line: a critic that hangs (the stage is named), an engine
that cannot load the model."""
from __future__ import annotations

import json
import shutil
import socket
import time

import pytest

from driver.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_hung_critic_stops_the_run_naming_the_editor_stage(pipeline_setup, pipeline_ray, capsys):
    # A real endpoint that accepts connections and never answers; the critic would wait 10 minutes.
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        critic = {"backend": "openai", "base_url": f"http://127.0.0.1:{hung.getsockname()[1]}/v1",
                  "model": "critic", "timeout_s": 600, "max_retries": 0}
        config = pipeline_setup.write("hung", critic=critic, train={"stage_deadlines": {"editor": 6}})
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
