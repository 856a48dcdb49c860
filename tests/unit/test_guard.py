"""The guard's verdicts: baseline from the first probe, regressions named with their reason, the best probe
kept, token drops judged only on token types seen often enough, and its state surviving a resume."""
import pytest

from medpo_ray.config import GuardConfig
from medpo_ray.critics.reference import ReferenceCritic
from medpo_ray.eval.suite import held_out
from medpo_ray.guard import Guard, score_answers, token_means
from tests.unit.generated import generated_records

pytestmark = pytest.mark.unit


def scores(edits, exact, vqa=0.8):
    return {"edits_per_answer": edits, "exact": exact, "vqa_accuracy": vqa, "abstain": 0.0, "answers": 10}


def test_first_probe_is_the_baseline_and_a_worse_one_is_flagged():
    g = Guard(GuardConfig(margin=0.02, max_token_drop=1.0, min_token_count=3))
    tokens = {" A": (-1.0, 10), " No": (-0.5, 10), " rare": (-2.0, 1)}
    v0 = g.observe(0, scores(0.10, 0.60), tokens)
    assert v0["best"] and not v0["regressed"] and v0["max_token_drop"] == 0
    v1 = g.observe(25, scores(0.11, 0.61), {" A": (-1.5, 10), " No": (-0.4, 10), " rare": (-9.0, 1)})
    assert not v1["regressed"] and v1["dropped_token"] == " A" and v1["max_token_drop"] == pytest.approx(0.5)
    assert not v1["best"]  # more edits than the warm start
    v2 = g.observe(50, scores(0.20, 0.50, 0.70), {" A": (-3.9, 10), " No": (-0.5, 10)})
    assert v2["regressed"] and len(v2["reasons"]) == 4
    assert "critic edits per answer 0.200 vs 0.100" in v2["reasons"][0]
    assert "' A'" in v2["reasons"][3] and "2.90 nats" in v2["reasons"][3]
    v3 = g.observe(75, scores(0.05, 0.70), tokens)
    assert v3["best"] and not v3["regressed"] and g.best["step"] == 75
    again = Guard.restore(g.cfg, g.state())
    assert again.baseline == g.baseline and again.best == g.best and len(again.history) == 4


@pytest.fixture(scope="module")
def records():
    return generated_records(12, 3)


def test_scores_of_gold_answers_and_of_broken_ones(records):
    probe = held_out(records, 8)
    assert len({r.study_id for r in probe}) == 8  # the first 8 studies by id, whatever the record order
    assert {r.record_id for r in probe} == {r.record_id for r in held_out(list(reversed(records)), 8)}
    gold = score_answers(probe, {r.record_id: r.target for r in probe}, ReferenceCritic(), 2.0)
    assert gold["edits_per_answer"] == 0 and gold["exact"] == 1.0 and gold["vqa_accuracy"] == 1.0
    flipped = {r.record_id: (r.target.replace("right", "@").replace("left", "right").replace("@", "left")
                             if r.task == "report" else "no idea") for r in probe}
    bad = score_answers(probe, flipped, ReferenceCritic(), 2.0)
    assert bad["edits_per_answer"] > 0 and bad["vqa_accuracy"] == 0.0 and bad["exact"] < 1.0


def test_token_means():
    assert token_means([[(" A", -1.0), (" B", -3.0)], [(" A", -2.0)]]) == {" A": (-1.5, 2), " B": (-3.0, 1)}
