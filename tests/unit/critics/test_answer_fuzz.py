"""The answer validator against garbage: whatever an LLM critic sends, the result is a verdict or an
abstention with a reason code from REASONS, never an exception (one bad answer must not stop a run)."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medpo_ray.critics.answer import REASONS, AnswerLimits, load_schema, reason_code, validate_answer

pytestmark = pytest.mark.unit

Y0 = "There is a small left pleural effusion. No pneumothorax."
LIMITS, SCHEMA = AnswerLimits(), load_schema("v1")


def check(raw) -> str:
    v = validate_answer(raw, Y0, LIMITS, SCHEMA, "openai")
    assert v.verdict in ("wrong", "right", "abstain")
    if v.verdict == "abstain":
        assert reason_code(v) in REASONS, v.reason
        return reason_code(v)
    return v.verdict


@pytest.mark.parametrize(("raw", "code"), [
    ("[" * 5000 + "]" * 5000, "not_json"),  # deep nesting far under the size cap: RecursionError before
    ('{"a":' * 2000 + "1" + "}" * 2000, "not_json"),
    # brackets inside a string are not nesting: this parses, and fails the schema (an unknown key)
    ('{"verdict": "abstain", "edits": [], "x": "' + "[" * 100 + '"}', "schema"),
    ('{"verdict": ' + "9" * 5000 + "}", "not_json"),  # an integer Python refuses to convert
    ('{"verdict": "right", "verdict": "wrong", "edits": [{"old": "left", "new": "right", "kind": "laterality"}]}',
     "duplicate_keys"),
    # lone surrogates and control characters: the schema's text pattern refuses them
    ('{"verdict": "wrong", "edits": [{"old": "left\\ud800", "new": "right", "kind": "laterality"}]}', "schema"),
    ('{"verdict": "wrong", "edits": [{"old": "left", "new": "ri\\u0000ght", "kind": "laterality"}]}', "schema"),
    ('{"verdict": "wrong", "edits": "left"}', "schema"),
    ('{"verdict": 1e999, "edits": []}', "schema"),
    (None, "bad_response"),
    (b'{"verdict": "wrong"}', "bad_response"),
])
def test_degenerate_answers_abstain_with_their_own_reason(raw, code):
    assert check(raw) == code


def test_a_valid_answer_still_passes():
    raw = json.dumps({"verdict": "wrong", "edits": [{"old": "left", "new": "right", "kind": "laterality"}],
                      "reason": "side"})
    assert check(raw) == "wrong"


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                     max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_text_is_a_verdict_or_a_named_abstention(raw):
    check(raw)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_any_json_value_is_a_verdict_or_a_named_abstention(value):
    check(json.dumps(value))
    check(json.dumps({"verdict": "wrong", "edits": [value], "reason": value}))
