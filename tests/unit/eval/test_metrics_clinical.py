"""Clinical efficacy, hallucination counts and critic-edit counts against values computed by hand."""
import pytest

from medpo_ray.critics.base import CriticVerdict, Edit
from medpo_ray.eval.metrics import clinical_efficacy, critic_edits, finding_labels, hallucinations

pytestmark = pytest.mark.unit

# Four reports over classes a, b, c, d (hand count: tp a=2; fp b=1, c=1, d=1; fn b=2).
PRED = [frozenset("ab"), frozenset("a"), frozenset(), frozenset("cd")]
REF = [frozenset("a"), frozenset("ab"), frozenset("b"), frozenset()]


def test_finding_labels_key_present_claims_by_side():
    text = "FINDINGS: Two nodules in the right lung. No nodule in the left lung. Heart size is normal."
    assert finding_labels(text) == {"nodule/right"}
    assert finding_labels("Cardiomegaly. Small left pleural effusion.") == {"cardiomegaly", "pleural_effusion/left"}
    assert finding_labels("There is a 12 mm nodule in the left lung and a mass in the right lung.") == \
        {"nodule/left", "mass/right"}


def test_uncertain_and_negated_mentions_are_not_findings():
    assert finding_labels("Possible pleural effusion.") == frozenset()
    assert finding_labels("No pneumothorax. No nodule in the right lung.") == frozenset()


def test_micro_per_class_and_macro_match_hand_counts():
    ce = clinical_efficacy(PRED, REF)
    assert ce["micro"]["tp"] == 2 and ce["micro"]["fp"] == 3 and ce["micro"]["fn"] == 2
    assert ce["micro"]["precision"] == pytest.approx(2 / 5)
    assert ce["micro"]["recall"] == pytest.approx(2 / 4)
    assert ce["micro"]["f1"] == pytest.approx(4 / 9)
    assert ce["per_class"]["a"]["f1"] == 1.0
    assert ce["per_class"]["b"] == {"tp": 0, "fp": 1, "fn": 2, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert ce["per_class"]["c"]["recall"] is None and ce["per_class"]["c"]["precision"] == 0.0
    # Macro over the reference classes a and b only.
    assert ce["macro"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5}


def test_perfect_and_empty_predictions():
    assert clinical_efficacy(REF, REF)["micro"]["f1"] == 1.0
    empty = clinical_efficacy([frozenset()] * 4, REF)
    assert empty["micro"]["precision"] is None and empty["micro"]["recall"] == 0.0


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="3 predicted label sets for 4"):
        clinical_efficacy(PRED[:3], REF)


def test_hallucinated_and_omitted_per_report():
    h = hallucinations(PRED, REF)
    assert h["hallucinated_per_report"] == pytest.approx((1 + 0 + 0 + 2) / 4)
    assert h["reports_with_hallucination"] == pytest.approx(2 / 4)
    assert h["omitted_per_report"] == pytest.approx((0 + 1 + 1 + 0) / 4)
    assert hallucinations([], [])["hallucinated_per_report"] is None


def test_critic_edits_count_only_corrections():
    e = Edit("left", "right", 0, "laterality")
    verdicts = [CriticVerdict("wrong", (e, e)), CriticVerdict("right", (e,)), CriticVerdict("abstain")]
    got = critic_edits(verdicts)
    assert got["edits_per_report"] == pytest.approx(2 / 3)
    assert got["wrong"] == got["right"] == got["abstain"] == pytest.approx(1 / 3)
    assert critic_edits([])["edits_per_report"] is None
