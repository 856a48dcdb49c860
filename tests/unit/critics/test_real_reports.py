"""The reference critic on free-text reports (IU-Xray, MIMIC-CXR): the labeler reads y0 and the reference,
a finding y0 gets wrong is fixed by a minimal sentence-local edit, and counterfactuals have mirrors."""
import json

import pytest

from driver.cli import main
from medpo_ray.critics import balance
from medpo_ray.critics.answer import reason_code
from medpo_ray.critics.reference import ReferenceCritic
from medpo_ray.data.record import Record
from medpo_ray.editing.pairs import PairLimits, apply_edits

pytestmark = pytest.mark.unit


def rep(reference: str) -> Record:
    return Record("r1", "report", b"", "Describe the image.", reference, findings={"pleural_effusion": {}})


def fixed(reference: str, y0: str) -> str | None:
    v = ReferenceCritic().review(rep(reference), y0)
    return apply_edits(y0, v.edits, PairLimits()) if v.verdict == "wrong" else None


@pytest.mark.parametrize(("reference", "y0", "want"), [
    # side, severity, presence both ways, one "no" in front of a list of findings
    ("Small right pleural effusion. No pneumothorax.", "Small left pleural effusion. No pneumothorax.",
     "Small right pleural effusion. No pneumothorax."),
    ("Small right pleural effusion.", "Large right pleural effusion.", "Small right pleural effusion."),
    ("Heart size normal. There is a right pleural effusion.", "Heart size normal. There is no pleural effusion.",
     "Heart size normal. There is pleural effusion."),
    ("The lungs are clear. There is no pulmonary edema.", "The lungs are clear. There is pulmonary edema.",
     "The lungs are clear. There is no pulmonary edema."),
    ("No pneumothorax or pleural effusion.", "Pneumothorax or pleural effusion.",
     "No pneumothorax or pleural effusion."),
    ("No focal consolidation. Stable cardiomegaly.", "There is a focal consolidation. Stable cardiomegaly.",
     "There is no focal consolidation. Stable cardiomegaly."),
    ("A 2 cm nodule in the left lung.", "A 3.5 cm nodule in the left lung.", "A 2 cm nodule in the left lung."),
    ("Normal chest.", "Small left effusion.", "No small left effusion."),  # a normal study: nothing is present
])
def test_wrong_findings_are_fixed_by_minimal_edits(reference, y0, want):
    assert fixed(reference, y0) == want


@pytest.mark.parametrize(("reference", "y0", "code"), [
    # "no" governs pneumothorax too, which the reference negates: removing it would assert both
    ("Right pleural effusion. No pneumothorax.", "No pneumothorax or pleural effusion.", "structural"),
    ("Normal chest.", "The heart is enlarged.", "structural"),  # no "a" and no place for a "no"
])
def test_what_word_edits_cannot_fix_is_an_abstention(reference, y0, code):
    assert reason_code(ReferenceCritic().review(rep(reference), y0)) == code


@pytest.mark.parametrize(("reference", "y0"), [
    ("Possible small left pleural effusion.", "No pleural effusion."),  # hedged in the reference: not judged
    ("Small left pleural effusion.", "Possible right pleural effusion."),  # hedged in y0: not judged
    ("Streaky bibasilar opacities. No focal airspace disease.", "No focal airspace disease."),  # mixed wording
    ("Left pleural effusion.", "Left pleural effusion. No pleural effusion on the right."),  # other side
    ("Bibasilar airspace opacity.", "Bibasilar atelectasis."),  # a sibling finding, other words
])
def test_what_the_reference_does_not_decide_is_never_called_wrong(reference, y0):
    assert ReferenceCritic().review(rep(reference), y0).verdict != "wrong"


def test_one_no_over_a_list_flips_every_finding_it_governs_and_its_key_names_them():
    keys = ReferenceCritic().counterfactual_keys(rep("No pneumothorax or pleural effusion."))
    assert keys == ["report-presence:pleural_effusion+pneumothorax.absent>pleural_effusion+pneumothorax.present"]
    mirror = ReferenceCritic().counterfactual_keys(rep("Pneumothorax or pleural effusion."))
    assert balance.mirror(keys[0]) in mirror


def test_counterfactuals_are_corrected_back_and_have_mirrors():
    reference = "Small right pleural effusion. No pneumothorax."
    critic = ReferenceCritic()
    keys = critic.counterfactual_keys(rep(reference))
    assert set(keys) == {"report-presence:pleural_effusion.present>pleural_effusion.absent",
                         "report-presence:pneumothorax.absent>pneumothorax.present",
                         "report-side:right>left", "report-severity:small>moderate"}
    assert all(balance.mirror(balance.mirror(k)) == k for k in keys)
    v = critic.review(rep(reference), reference)
    assert v.verdict == "right" and v.counterfactual in keys
    flipped = apply_edits(reference, v.edits, PairLimits())
    assert fixed(reference, flipped) == reference


def test_critic_check_on_real_iu_xray_reports(capsys):
    """The rates on the 3,955 real IU-Xray reports torchxrayvision ships (read in place, no images):
    every injected error the critic calls wrong it fixes to the original words almost always, and it never
    calls a clean report wrong. Detection is bounded by the labeler's vocabulary (README: critics)."""
    from medpo_ray.labeler.iu_xray import reports_archive

    assert main(["critic", "check", "--kind", "iu_xray", "--data", str(reports_archive())]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert result["clean"] + result["bad_records"] == 3955
    assert result["false_positive_rate"] == 0.0 and result["pair_accept_rate"] == 1.0
    assert result["detected_rate"] > 0.3 and result["exact_fix_rate"] > 0.95 * result["detected_rate"]
    rows = {line.split()[0]: line.split()[1:] for line in out[1:6]}
    assert all(int(rows[k][1]) > 0 for k in ("laterality", "size", "count", "measurement", "presence"))
