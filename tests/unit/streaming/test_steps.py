"""A step's accounting without Ray: every issued prompt is pending, an example or dropped with its reason;
drops at any stage are topped up until the step holds exactly its batch."""
from __future__ import annotations

import pytest

from medpo_ray.errors import MedpoError
from medpo_ray.streaming.outcome import StageOutcome
from medpo_ray.streaming.steps import StepBatch

pytestmark = pytest.mark.unit


def _invariant(b: StepBatch, pending: int) -> None:
    # Every issued prompt is pending, an example or dropped; `pending` is what the stages still hold.
    assert b.pending == pending >= 0
    assert len(b.issued) == b.pending + len(b.examples) + sum(b.rejections.values())


def test_drops_at_every_stage_are_topped_up_to_exactly_the_batch():
    b = StepBatch(step=3, size=4)
    b.issue(["a", "b", "c", "d"])
    assert b.need() == 0
    kept, dropped = b.settle(StageOutcome("rollout", ("a", "b", "c"), {"d": "image: cannot decode"},
                                          versions=dict.fromkeys("abc", 3)), ["a", "b", "c", "d"])
    assert kept == ["a", "b", "c"] and dropped == {"d": "rollout:image"} and b.need() == 1
    _invariant(b, pending=3)
    b.issue(["e"])
    kept, dropped = b.settle(StageOutcome("editor", ("a", "c"), {"b": "abstain"}, versions={"a": 3, "c": 3},
                                          kinds={"a": "A:laterality", "c": "B:presence:no>a"},
                                          offered={"presence:no>a": 1}), ["a", "b", "c"])
    assert kept == ["a", "c"] and dropped == {"b": "editor:abstain"} and b.need() == 1
    assert b.kinds == {"a": "A:laterality", "c": "B:presence:no>a"} and b.offered["presence:no>a"] == 1
    b.issue(["f"])
    # The corruption stage runs the learner's collation check: a refused pair leaves like any drop.
    kept, dropped = b.settle(StageOutcome("corruption", ("a",), {"c": "y_plus: contains a vision token"}),
                             ["a", "c"])
    b.add_examples(kept, "payload-ref")
    assert b.examples == {"a": ("payload-ref", 0)} and dropped == {"c": "corruption:y_plus"}
    assert b.need() == 1 and not b.complete()
    _invariant(b, pending=2)  # e and f, still at the rollout
    b.issue(["g"])
    # an id the stage answered neither way is dropped as missing, not left to stall the step
    kept, dropped = b.settle(StageOutcome("rollout", ("e", "f")), ["e", "f", "g"])
    assert dropped == {"g": "rollout:missing"}
    _invariant(b, pending=2)  # e and f, now at the editor
    assert b.rejections == {"rollout:image": 1, "editor:abstain": 1, "corruption:y_plus": 1, "rollout:missing": 1}


def test_stale_samples_are_named_and_the_budget_stops_an_unfillable_step():
    b = StepBatch(step=5, size=2)
    b.issue(["a", "b"])
    b.settle(StageOutcome("rollout", ("a", "b"), versions={"a": 5, "b": 3}), ["a", "b"])
    stale = b.stale(["a", "b"], max_staleness=1)
    assert stale == {"b": "staleness:stale"}
    b.drop(stale)
    assert b.staleness(["a"]) == [0] and b.need() == 1
    b.check_budget(1, max_prompts_per_pair=2)  # 3 of 4 allowed prompts: fine
    b.issue(["c", "d"])
    with pytest.raises(MedpoError, match="critic rejects almost everything"):
        b.check_budget(1, max_prompts_per_pair=2)


def test_an_outcome_cannot_keep_and_drop_the_same_id():
    with pytest.raises(ValueError, match="both kept and dropped"):
        StageOutcome("editor", ("a",), {"a": "abstain"})
    assert StageOutcome.code("image: cannot decode") == "image" and StageOutcome.code("") == "unknown"
