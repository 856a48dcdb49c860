"""Checks on a critic's answer text that need no server: overlap, per-sentence limits, word counting."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medpo_ray.critics.answer import AnswerLimits, changed_words, load_schema, reason_code, validate_answer

pytestmark = pytest.mark.unit

Y0 = "Small left pleural effusion. Two nodules in the right lung, 12 mm."


def _check(edits, verdict="wrong", limits=AnswerLimits()):
    return validate_answer(json.dumps({"verdict": verdict, "edits": edits}), Y0, limits, load_schema("v1"))


def _e(old, new, kind="other"):
    return {"old": old, "new": new, "kind": kind}


def test_changed_words_counts_the_longer_side_of_each_replaced_run():
    assert changed_words("small left pleural", "small right pleural") == 1
    assert changed_words("Two nodules", "A nodule") == 2
    assert changed_words("left", "left") == 0
    assert changed_words("no effusion", "effusion") == 1


def test_edits_in_two_sentences_have_separate_budgets():
    v = _check([_e("Small left", "Large right"), _e("Two nodules", "Three nodules"), _e("12 mm", "9 mm")])
    assert v.verdict == "wrong" and [e.start for e in v.edits] == [0, Y0.index("Two"), Y0.index("12 mm")]
    tight = AnswerLimits(max_changed_words_per_sentence=1)
    assert reason_code(_check([_e("Small left", "Large right")], limits=tight)) == "too_many_changes"


@pytest.mark.parametrize("edits,code", [
    ([_e("left pleural", "right pleural"), _e("pleural effusion", "pleural thickening")], "overlapping_edits"),
    ([_e("left", "left")], "noop_edit"),
])
def test_edit_level_rejections(edits, code):
    assert reason_code(_check(edits)) == code


def test_edit_count_limit_and_schema_bound():
    three = [_e("Small", "Large"), _e("Two", "Three"), _e("12", "15")]
    assert reason_code(_check(three, limits=AnswerLimits(max_edits=2))) == "too_many_edits"
    assert reason_code(_check([_e("left", "right")] * 9)) == "schema"  # maxItems 8 in the schema


def test_wrong_kind_and_control_characters_fail_the_schema():
    assert reason_code(_check([_e("left", "right", kind="synonym")])) == "schema"
    assert reason_code(_check([_e("left", "ri\u0007ght")])) == "schema"


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=300), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.sampled_from(
        ["verdict", "edits", "old", "new", "kind", "reason", "x"]), kids, max_size=4), max_leaves=12).map(json.dumps)))
def test_any_answer_text_gives_a_verdict_and_only_checked_edits(raw):
    v = validate_answer(raw, Y0, AnswerLimits(), load_schema("v1"))
    assert v.verdict in ("wrong", "right", "abstain") and (v.verdict == "abstain") == (not v.edits)
    assert all(Y0[e.start:e.start + len(e.old)] == e.old for e in v.edits)
