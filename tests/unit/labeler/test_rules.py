"""The rule labeler on hand-written sentences: status, cue scope, attributes and exact spans."""
import pytest

from medpo_ray.labeler import chexpert_labels, label, sentences

pytestmark = pytest.mark.unit


def _one(text, finding):
    hits = [c for c in label(text) if c.finding == finding]
    assert len(hits) == 1, hits
    return hits[0]


def _at(text, word, nth=0):
    start = -1
    for _ in range(nth + 1):
        start = text.index(word, start + 1)
    return start


@pytest.mark.parametrize("text,finding,status", [
    ("There is a small left pleural effusion.", "pleural_effusion", "present"),
    ("No pleural effusion.", "pleural_effusion", "absent"),
    ("No focal consolidation, effusion, or pneumothorax.", "pneumothorax", "absent"),
    ("Pneumothorax is not seen.", "pneumothorax", "absent"),
    ("Pneumonia cannot be excluded.", "pneumonia", "uncertain"),
    ("Possible right lower lobe pneumonia.", "pneumonia", "uncertain"),
    ("The heart is not enlarged.", "cardiomegaly", "absent"),
    ("Heart size is normal.", "cardiomegaly", "absent"),
    ("The heart is mildly enlarged.", "cardiomegaly", "present"),
    ("No change in the left pleural effusion.", "pleural_effusion", "present"),
    ("There is no pneumothorax but a small right effusion is present.", "pleural_effusion", "present"),
    ("No pneumothorax; there is a right effusion.", "pleural_effusion", "present"),
])
def test_status(text, finding, status):
    assert _one(text, finding).status == status


def test_post_negation_reaches_a_joined_list_but_not_an_earlier_clause():
    both = label("Effusion and pneumothorax are not seen.")
    assert [(c.finding, c.status) for c in both] == [("pleural_effusion", "absent"), ("pneumothorax", "absent")]
    text = "The heart is enlarged, pneumothorax is absent."
    assert _one(text, "cardiomegaly").status == "present"
    assert _one(text, "pneumothorax").status == "absent"


def test_attributes_and_their_spans():
    text = "There is a small left pleural effusion and a 12 mm nodule in the right upper lobe."
    eff = _one(text, "pleural_effusion")
    assert (eff.side.value, eff.severity.value) == ("left", "small")
    assert eff.side.span.start == _at(text, "left") and eff.side.span.text == "left"
    assert eff.mention.start == _at(text, "pleural effusion")
    nod = _one(text, "nodule")
    assert nod.side.value == "right" and nod.side.span.start == _at(text, "right")
    assert nod.measurement.value == 12.0 and nod.measurement.unit == "mm"
    assert text[nod.measurement.span.start:nod.measurement.span.end] == "12"
    assert nod.count.value == 1 and nod.count.span.start == _at(text, "a 12")


def test_counts_measurements_in_cm_and_ambiguity():
    text = "Two nodules in the left lung measuring up to 1.5 cm. Nodule in the right and left lungs."
    first, second = [c for c in label(text) if c.finding == "nodule"]
    assert first.count.value == 2 and first.count.span.text == "Two"
    assert first.measurement.value == 15.0 and first.measurement.unit == "cm"
    assert second.side.value == "bilateral"
    amb = _one("Nodule in the right lung or the left lung.", "nodule")
    assert "side" in amb.ambiguous


def test_sentences_keep_decimals_and_offsets():
    text = "A 1.5 cm nodule.  No effusion!\nHeart normal"
    spans = sentences(text)
    assert [s.text for s in spans] == ["A 1.5 cm nodule.", "No effusion!", "Heart normal"]
    assert all(text[s.start:s.end] == s.text for s in spans)


def test_chexpert_aggregation():
    labels = chexpert_labels(label("No effusion. Possible pneumonia. A left nodule."))
    assert labels["pleural_effusion"] == 0 and labels["pneumonia"] == -1 and labels["lung_lesion"] == 1
    assert labels["fracture"] is None and labels["no_finding"] is None
    assert chexpert_labels(label("No pneumothorax. Heart size is normal."))["no_finding"] == 1


def test_nothing_to_label():
    assert label("") == [] and label("...") == [] and label("The lungs are clear.") == []
