"""Whatever the policy writes, the reference critic answers a verdict (never raises), and every edit it
proposes replaces words that are really at its offset in y0."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medpo_ray.critics.reference import ReferenceCritic
from medpo_ray.data.record import Record

pytestmark = pytest.mark.unit

WORDS = ("FINDINGS:", "IMPRESSION:", "A", "a", "No", "no", "There", "is", "are", "nodule", "nodules", "in", "the",
         "right", "left", "right-sided", "left-sided", "lung", "lung:", "12", "7", "mm", "small", "moderate",
         "large", "One", "two", "Three", "and", "seen", "measures", ".", ";", ",", "banana", "possible")
RECORD = Record("fuzz", "report", b"", "p", "", findings={
    "noun": "nodule", "region": "lung",
    "lesions": [{"side": "right", "diameter_mm": 12, "size": "moderate"},
                {"side": "left", "diameter_mm": 7, "size": "small"}]})
CRITIC = ReferenceCritic()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=40), st.text(max_size=8))
def test_any_text_gets_a_verdict_with_checkable_edits(words, noise):
    y0 = " ".join(words) + noise
    v = CRITIC.review(RECORD, y0)
    assert v.verdict in ("wrong", "right", "abstain")
    assert (v.verdict == "abstain") == (not v.edits)
    for e in v.edits:
        assert y0[e.start:e.start + len(e.old)] == e.old and e.old != e.new


VALID = ("FINDINGS: A 12 mm moderate nodule in the right lung. There is a 7 mm small nodule in the left lung. "
         "IMPRESSION: One moderate right-sided nodule and one small left-sided nodule.").split(" ")


# Half of the swaps put a fact word where any word was (to reach "wrong"), half anything (to break it).
FACTS = ("right", "left", "small", "moderate", "large", "One", "one", "two", "Three", "12", "7", "20", "A", "No")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.sampled_from(FACTS) | st.sampled_from(WORDS + ("",))),
                max_size=3))
def test_mutated_reports_get_a_verdict_with_checkable_edits(changes):
    words = list(VALID)
    for i, w in changes:
        words[i] = w
    y0 = " ".join(w for w in words if w)
    v = CRITIC.review(RECORD, y0)
    assert (v.verdict == "abstain") == (not v.edits)
    for e in v.edits:
        assert y0[e.start:e.start + len(e.old)] == e.old and e.old != e.new
    if v.verdict == "wrong":  # the fix is one the critic itself accepts
        fixed = y0
        for e in sorted(v.edits, key=lambda e: -e.start):
            fixed = fixed[:e.start] + e.new + fixed[e.start + len(e.old):]
        assert CRITIC.review(RECORD, fixed).verdict == "right", (y0, v)
