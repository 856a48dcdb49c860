"""The LLM critic building the pairs of a training run, and the LLM judge grading an evaluation, both over a
real vLLM OpenAI-compatible server on loopback (structured output, API key).

The critic model is the tiny preset taught the critic's task for a few hundred steps (tiny_critic.py): a
real LLM answering the real prompt under the real schema, weak at judging (it calls most answers right),
which is beside the point here: every pair it yields must pass the same checks as any critic's, be
counted, and the run must finish.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema
import pyarrow.parquet as pq
import pytest

from medpo_ray.critics.answer import load_schema
from tests.integration.tiny_critic import build_tiny_critic
from tests.integration.vllm_server import serve
from tests.unit.generated import generated_records

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "medpo-llm-critic-key"
ENV = {**os.environ, "MEDPO_CRITIC_API_KEY": KEY}


@pytest.fixture(scope="module")
def critic_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm_critic")
    model = build_tiny_critic(root / "critic", generated_records(40, 5))
    with serve(model, root, KEY) as base:
        yield base


def _cli(*argv: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "driver.cli", *argv], env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def test_the_llm_critic_builds_the_pairs_of_a_run(pipeline_setup, critic_server):
    critic = {"backend": "openai", "base_url": critic_server, "model": "tiny", "timeout_s": 120,
              "max_tokens": 256, "concurrency": 4}
    config = pipeline_setup.write("llm-critic", critic=critic, train={"steps": 2}, guard={"every": 0})
    done = _cli("train", "--config", str(config))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"[critic] {critic_server} answers; critic model 'tiny'" in done.stdout
    run = pipeline_setup.root / "runs" / "llm-critic"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["trained"] == 2 * 4 and summary["lost"] == 0
    schema = load_schema("v2")
    rows = [r for f in sorted((run / "audit").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    trained = [r for r in rows if r["trained"]]
    assert len(trained) == summary["trained"]
    for r in trained:
        assert r["critic"] == "openai" and r["verdict"] in ("right", "wrong")
        jsonschema.validate(json.loads(r["critic_raw"]), schema)  # the server's grammar held the model
        assert r["branch"] == ("B" if r["verdict"] == "right" else "A")
        assert r["y_plus"] != r["y_minus"] and (r["y0"] in (r["y_plus"], r["y_minus"]))
    # Every answer reviewed is accounted for: a pair, or a rejection counted under its reason.
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sum(s["pairs"] for s in steps if "pairs" in s) >= summary["trained"]
    assert summary["issued"] == summary["trained"] + sum(summary["dropped"].values()) + sum(
        summary["in_flight"].values())


def test_the_llm_judge_grades_beside_exact_match_and_caches(pipeline_setup, critic_server, tmp_path):
    cache = tmp_path / "judge.jsonl"
    judge = {"judge": "openai", "base_url": critic_server, "model": "tiny", "api_key_env": "MEDPO_CRITIC_API_KEY",
             "timeout_s": 120, "cache": str(cache)}
    config = pipeline_setup.write("judge", eval=judge)
    results = []
    for n in range(2):
        out = tmp_path / f"eval{n}"
        done = _cli("eval", "--config", str(config), "--model", pipeline_setup.model_dir, "--split", "test",
                    "--studies", "12", "--grounding-studies", "0", "--out", str(out))
        assert done.returncode == 0, done.stderr[-3000:]
        results.append(next(iter(json.loads((out / "eval.json").read_text()).values())))
    first, second = results
    n = first["structured"]["n"]
    graded = first["judge"]["graded_by"]
    # Yes/no ground truths go to the regex, every other answer to the model; nothing is left ungraded.
    assert graded["shortcut"] > 0 and graded["asked"] + graded["cached"] > 0 and graded["unjudged"] == 0
    assert graded["shortcut"] + graded["asked"] + graded["cached"] == n["vqa_closed"] + n["vqa_open"]
    assert len(cache.read_text().splitlines()) == graded["asked"]
    # The second evaluation asks nothing: the same answers are in the cache.
    assert second["judge"]["graded_by"]["asked"] == 0
    assert second["judge"]["graded_by"]["cached"] == graded["asked"] + graded["cached"]
    assert second["judge"]["vqa_open"] == first["judge"]["vqa_open"]
    for split in ("vqa_closed", "vqa_open"):
        assert first["judge"]["n"].get(split, 0) == n[split] and 0.0 <= first["judge"][split] <= 1.0
