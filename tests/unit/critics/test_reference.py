"""The reference critic: the perturbation suite on generated studies, and hand-made policy answers."""
import pytest

from medpo_ray.critics.answer import reason_code
from medpo_ray.critics.base import Critic, CriticVerdict
from medpo_ray.critics.perturb import ERROR_TYPES, injections, run_suite, summary
from medpo_ray.critics.reference import ReferenceCritic
from medpo_ray.data.record import Record
from medpo_ray.data.reports import REPORT_PROMPT
from medpo_ray.editing.pairs import PairLimits, apply_edits
from tests.unit.generated import generated_records

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def records():
    """Report and VQA records of 48 real generated studies (every paraphrase of the grammar occurs)."""
    return generated_records(48, 7)


def _record(lesions, noun="nodule", region="lung"):
    f = {"noun": noun, "region": region, "lesions": [{"side": s, "diameter_mm": d, "size": z} for s, d, z in lesions]}
    return Record("hand-1", "report", b"", REPORT_PROMPT, "", findings=f)


def _fixed(y0, verdict):
    return apply_edits(y0, verdict.edits, PairLimits())


def test_suite_detects_and_exactly_fixes_every_injected_error(records):
    rows = run_suite(ReferenceCritic(), records)
    s = summary(rows)
    assert all(rows[k]["injected"] > 20 for k in ERROR_TYPES), rows
    assert (s["detected_rate"], s["exact_fix_rate"], s["false_positive_rate"]) == (1.0, 1.0, 0.0)
    assert s["clean_abstain_rate"] == 0.0 and s["counterfactual_roundtrip_rate"] == 1.0
    assert s["pair_accept_rate"] == 1.0


class _AlwaysRight(Critic):
    name = "always-right"

    def review(self, record, y0):
        return CriticVerdict("right")


def test_suite_numbers_can_fail(records):
    reports = [r for r in records if r.task == "report"]
    assert summary(run_suite(_AlwaysRight(), reports))["detected_rate"] == 0.0
    # A 10 mm tolerance cannot see the suite's 5 mm shifts: only the measurement row drops.
    rows = run_suite(ReferenceCritic(measurement_tolerance_mm=10), reports)
    assert rows["measurement"]["detected"] == 0 and rows["size"]["detected"] == rows["size"]["injected"]


def test_injections_swap_one_word_each(records):
    for rec in records[:60]:
        for inj in injections(rec):
            assert inj.text != rec.target and inj.text[:inj.start] == rec.target[:inj.start]
            assert inj.text[inj.start + len(inj.new):] == rec.target[inj.start + len(inj.old):]


def test_whole_report_on_the_wrong_side_is_fixed_by_side_words():
    rec = _record([("right", 12, "moderate")])
    y0 = ("FINDINGS: No nodule in the right lung. A 12 mm moderate nodule in the left lung. "
          "IMPRESSION: One moderate left-sided nodule.")
    v = ReferenceCritic().review(rec, y0)
    assert v.verdict == "wrong" and {e.kind for e in v.edits} == {"laterality"}
    assert _fixed(y0, v) == ("FINDINGS: No nodule in the left lung. A 12 mm moderate nodule in the right lung. "
                             "IMPRESSION: One moderate right-sided nodule.")


def test_missed_lesion_is_fixed_by_the_negation_word():
    rec = _record([("left", 7, "small"), ("right", 25, "large")])
    y0 = ("FINDINGS: A 25 mm large nodule in the right lung. There is no nodule in the left lung. "
          "IMPRESSION: One large right-sided nodule and one small left-sided nodule.")
    v = ReferenceCritic().review(rec, y0)
    assert [(e.old, e.new, e.kind) for e in v.edits] == [("no", "a", "presence")]
    assert v.edits[0].start == y0.index("no nodule")


def test_several_errors_and_measurement_tolerance():
    rec = _record([("right", 12, "moderate"), ("right", 31, "large")])
    y0 = ("FINDINGS: Three nodules in the right lung: 13 mm small and 24 mm large. No nodule in the left lung. "
          "IMPRESSION: Two right-sided nodules.")
    v = ReferenceCritic().review(rec, y0)
    assert sorted((e.old, e.new) for e in v.edits) == [("24", "31"), ("Three", "Two"), ("small", "moderate")]
    assert reason_code(ReferenceCritic(max_changed_words_per_sentence=2).review(rec, y0)) == "too_many_changes"


@pytest.mark.parametrize("y0,code", [
    ("FINDINGS: A 12 mm moderate nodule in the right lung. No nodule in the left lung. "
     "IMPRESSION: One moderate right-sided nodule.", "structural"),  # truth has two: a sentence must change
    ("FINDINGS: No nodule in the right lung. IMPRESSION: No nodule.", "structural"),  # a side sentence is missing
    ("FINDINGS: No nodule in the right lung. No nodule in the left lung. No pneumothorax. IMPRESSION: No nodule.",
     "unreadable"),
    ("nodule nodule banana lung", "unreadable"),
    ("FINDINGS: Possible nodule in the right lung. No nodule in the left lung. IMPRESSION: No nodule.",
     "unreadable"),
    ("", "unreadable"),
])
def test_abstains_when_swapping_words_cannot_do(y0, code):
    rec = _record([("right", 12, "moderate"), ("right", 16, "moderate")])
    v = ReferenceCritic().review(rec, y0)
    assert v.verdict == "abstain" and v.edits == () and reason_code(v) == code, v


def test_a_real_report_is_judged_against_its_reference_text():
    # Without structured lesions the reference text is the truth (report_labeler.py); naming no finding, it
    # is a normal study.
    rec = Record("iu-1", "report", b"", "p", "Normal chest. Bones intact.")
    v = ReferenceCritic().review(rec, "Small left effusion.")
    assert v.verdict == "wrong" and [(e.old, e.new) for e in v.edits] == [("Small", "No small")]


@pytest.mark.parametrize("target,qtype,y0,verdict,new", [
    ("right", "side", "The nodule is on the left.", "wrong", "right"),
    ("no", "size", "Yes", "wrong", "No"),
    ("14 mm", "size", "12 mm", "right", None),
    ("14 mm", "size", "20 mm", "wrong", "14"),
    ("two", "count", "two", "right", None),
])
def test_vqa_answers(target, qtype, y0, verdict, new):
    rec = Record("q-1", "vqa", b"", "?", target, findings={"noun": "nodule", "region": "lung", "lesions": []},
                 question_type=qtype)
    v = ReferenceCritic().review(rec, y0)
    assert v.verdict == verdict and len(v.edits) == 1
    if new is not None:
        assert v.edits[0].new == new
    else:  # the counterfactual really is wrong, and the critic says so
        assert ReferenceCritic().review(rec, _fixed(y0, v)).verdict == "wrong"


def test_vqa_with_two_answer_words_abstains_and_needs_no_findings():
    rec = Record("q-2", "vqa", b"", "Is there an effusion?", "yes")  # e.g. VQA-RAD: no structured findings
    assert reason_code(ReferenceCritic().review(rec, "yes or no")) == "unreadable"
    assert ReferenceCritic().review(rec, "No.").edits[0].new == "Yes"


def test_counterfactual_is_deterministic_by_record_id(records):
    rec = next(r for r in records if r.task == "report")
    assert ReferenceCritic().review(rec, rec.target) == ReferenceCritic().review(rec, rec.target)
