"""The OpenAI-compatible critic against a real vLLM server of the tiny model on loopback.

The whole HTTP path runs for real: the model built by `medpo-ray model tiny`, vLLM's OpenAI server
with JSON-schema structured output (xgrammar), an API key checked by the server. The tiny random
model's answers are nonsense, which is what the critic's checks must catch: schema-valid answers
are parsed and then judged, free-form garbage and a wrong key become counted abstentions.
"""
import json
import subprocess
import sys

import jsonschema
import pytest

from medpo_ray.config import CriticConfig
from medpo_ray.critics.answer import REASONS, load_schema, reason_code
from medpo_ray.critics.openai_critic import OpenAICritic
from medpo_ray.data.record import Record
from tests.integration.vllm_server import serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "medpo-test-key"
REPORT = ("FINDINGS: A 12 mm moderate nodule in the right lung. No nodule in the left lung. "
          "IMPRESSION: One moderate right-sided nodule.")
RECORD = Record("rec-1", "report", b"", "Write the report.", REPORT,
                findings={"noun": "nodule", "region": "lung",
                          "lesions": [{"side": "right", "diameter_mm": 12, "size": "moderate"}]})
VQA = Record("q-1", "vqa", b"", "On which side is the nodule?", "right", question_type="side",
             findings=RECORD.findings)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Base URL of a vLLM OpenAI server (structured output on, API key required) of the tiny model."""
    root = tmp_path_factory.mktemp("critic_vllm")
    model = root / "model"
    subprocess.run([sys.executable, "-m", "driver.cli", "model", "tiny", "--out", str(model)], check=True,
                   capture_output=True, timeout=300)
    with serve(model, root, KEY) as base:
        yield base


def _critic(base, monkeypatch, key=KEY, **kw):
    monkeypatch.setenv("MEDPO_CRITIC_API_KEY", key)
    return OpenAICritic(CriticConfig(backend="openai", base_url=base, timeout_s=120, max_retries=1,
                                     backoff_s=0.1, **kw))


def test_structured_answers_are_schema_valid_and_parsed(server, monkeypatch):
    critic = _critic(server, monkeypatch, max_tokens=512, concurrency=2)
    items = [(RECORD, REPORT), (RECORD, REPORT.replace("right lung", "left lung")), (VQA, "left")]
    verdicts = critic.review_many(items)
    schema = load_schema("v1")
    for (_, y0), v in zip(items, verdicts, strict=True):
        jsonschema.validate(json.loads(v.raw), schema)  # the server's grammar held the model to the schema
        assert reason_code(v) not in ("not_json", "schema", "http_error", "timeout", "connection"), v.reason
        if v.verdict == "abstain":
            assert v.edits == () and reason_code(v) in REASONS
        else:  # an accepted edit really replaces words of y0
            assert all(y0[e.start:e.start + len(e.old)] == e.old for e in v.edits)
    assert sum(critic.counts().values()) == len(items)


def test_free_text_garbage_is_rejected_with_counted_reasons(server, monkeypatch):
    critic = _critic(server, monkeypatch, max_tokens=48, structured_output="none")
    verdicts = critic.review_many([(RECORD, REPORT), (VQA, "left")])
    assert all(v.verdict == "abstain" and v.edits == () and v.raw for v in verdicts)
    codes = critic.counts()
    assert sum(codes.values()) == 2 and set(codes) <= {"not_json", "injection", "empty", "schema"}, codes


def test_wrong_api_key_is_refused_without_retry(server, monkeypatch):
    critic = _critic(server, monkeypatch, key="not-the-key", model="tiny")
    v = critic.review(RECORD, REPORT)
    assert reason_code(v) == "http_error" and "401" in v.reason
    assert critic.counts() == {"http_error": 1}
