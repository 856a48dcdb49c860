"""Structured accuracy against hand-made outputs (correct, wrong side, off measurement, unreadable), the
majority baseline on a hand-made training split, and the blank-image requests; expected values by hand."""
import io

import pytest

from medpo_ray.data.record import Record
from medpo_ray.eval.structured import (
    blank_requests,
    format_table,
    majority_predictor,
    read_findings,
    score_majority,
    score_outputs,
    score_report,
)

pytestmark = pytest.mark.unit
PROMPT = "Write the findings and impression of a radiology report for this image."


def _png(size=(112, 112)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", size, 30).save(buf, format="PNG")
    return buf.getvalue()


def _findings(*lesions, mm_per_px=2.9):
    les = [{"side": s, "diameter_mm": d, "size": z} for s, d, z in lesions]
    return {"modality": "X-ray", "region": "lung", "noun": "nodule", "mm_per_px": mm_per_px, "lesions": les,
            "count": {s: sum(x["side"] == s for x in les) for s in ("right", "left")}, "total": len(les)}


def _report(rid, findings, split="val"):
    return Record(rid, "report", _png(), PROMPT, "", study_id=rid, split=split, findings=findings)


def _vqa(rid, question, answer, answer_type, split="val", qtype="presence", study="t5"):
    # Questions share a study (and its findings) with a report record, as in the embedded data.
    return Record(rid, "vqa", _png(), question, answer, study_id=study, split=split, findings=NORMAL,
                  question_type=qtype, answer_type=answer_type)


NORMAL = _findings()
THREE = _findings(("right", 52, "large"), ("left", 30, "large"), ("left", 12, "moderate"))
ONE_RIGHT = _findings(("right", 15, "moderate"))


def test_a_correct_report_scores_everything():
    text = ("FINDINGS: A 52 mm large nodule in the right lung. There are two nodules in the left lung: 12 mm "
            "moderate and 30 mm large. IMPRESSION: One large right-sided nodule and two left-sided nodules.")
    assert score_report(read_findings(text, THREE), THREE, tol=2) == {
        "parse": (1, 1), "presence": (1, 1), "laterality": (1, 1), "count": (1, 1), "size": (3, 3),
        "measurement": (3, 3), "exact": (1, 1)}


def test_the_wrong_side():
    text = "FINDINGS: No nodule in the right lung. A 15 mm moderate nodule in the left lung. IMPRESSION: One moderate left-sided nodule."
    assert score_report(read_findings(text, ONE_RIGHT), ONE_RIGHT, tol=2) == {
        "parse": (1, 1), "presence": (1, 1), "laterality": (0, 1), "count": (1, 1), "size": (0, 1),
        "measurement": (0, 1), "exact": (0, 1)}


@pytest.mark.parametrize("mm, ok", [(17, 1), (13, 1), (18, 0), (12, 0)])
def test_measurement_tolerance(mm, ok):
    text = f"FINDINGS: A moderate nodule in the right lung measures {mm} mm. No nodule in the left lung. IMPRESSION: One moderate right-sided nodule."
    scores = score_report(read_findings(text, ONE_RIGHT), ONE_RIGHT, tol=2)
    assert scores["measurement"] == (ok, 1) and scores["exact"] == (ok, 1) and scores["size"] == (1, 1)


def test_unreadable_output_is_wrong_everywhere():
    for text in ("The lungs are clear.", "FINDINGS: A 15 mm moderate nodule in the right lung. IMPRESSION: One nodule.",
                 "FINDINGS: A 15 mm moderate mass in the right lung. No nodule in the left lung. IMPRESSION: No nodule."):
        assert read_findings(text, ONE_RIGHT) is None
    assert score_report(None, THREE, tol=2) == {
        "parse": (0, 1), "presence": (0, 1), "laterality": (0, 1), "count": (0, 1), "size": (0, 3),
        "measurement": (0, 3), "exact": (0, 1)}


def test_normal_study_and_a_bare_positive_sentence():
    text = "FINDINGS: No nodule in the right lung. There is no nodule in the left lung. IMPRESSION: No nodule."
    assert score_report(read_findings(text, NORMAL), NORMAL, tol=2) == {
        "parse": (1, 1), "presence": (1, 1), "laterality": (0, 0), "count": (1, 1), "size": (0, 0),
        "measurement": (0, 0), "exact": (1, 1)}
    bare = "FINDINGS: A nodule in the right lung. No nodule in the left lung. IMPRESSION: One right-sided nodule."
    scores = score_report(read_findings(bare, ONE_RIGHT), ONE_RIGHT, tol=2)
    assert scores["count"] == (1, 1) and scores["measurement"] == (0, 1) and scores["exact"] == (0, 1)


def test_summary_over_reports_and_vqa():
    records = [_report("a", ONE_RIGHT), _report("b", NORMAL), _report("c", THREE),
               _vqa("q1", "Is there any nodule in this image?", "yes", "closed"),
               _vqa("q2", "How many nodules are there?", "two", "open", qtype="count"),
               _vqa("q3", "What imaging modality is this?", "X-ray", "open", qtype="modality")]
    outputs = {"a": "FINDINGS: A 15 mm moderate nodule in the right lung. No nodule in the left lung. IMPRESSION: One moderate right-sided nodule.",
               "b": "FINDINGS: A 15 mm moderate nodule in the right lung. No nodule in the left lung. IMPRESSION: One moderate right-sided nodule.",
               "q1": " Yes.", "q2": "three", "q3": "x-ray"}  # "c" has no output: scored unreadable
    s = score_outputs(records, outputs, tol=2, bad=1)
    assert s["parse"] == pytest.approx(2 / 3) and s["presence"] == pytest.approx(1 / 3)
    assert s["laterality"] == pytest.approx(1 / 2) and s["count"] == pytest.approx(1 / 3)
    assert s["measurement"] == pytest.approx(1 / 4) and s["exact"] == pytest.approx(1 / 3)
    assert s["vqa_closed"] == 1.0 and s["vqa_open"] == pytest.approx(1 / 2)
    assert s["n"] == {"parse": 3, "presence": 3, "laterality": 2, "count": 3, "size": 4, "measurement": 4,
                      "exact": 3, "vqa_closed": 1, "vqa_open": 2, "unusable": 1}


def test_majority_baseline_from_a_hand_made_training_split():
    train = [_report("t1", _findings(("right", 15, "moderate")), "train"),
             _report("t2", _findings(("right", 15, "moderate")), "train"),
             _report("t3", _findings(("left", 33, "large")), "train"),
             _report("t4", _findings(("right", 12, "moderate"), ("left", 40, "large")), "train"),
             _report("t5", NORMAL, "train"), _report("t6", NORMAL, "train"),
             _report("t7", _findings(("left", 9, "small"), mm_per_px=0.7), "train"),
             _vqa("v1", "Is there any nodule in this image?", "yes", "closed", "train"),
             _vqa("v2", "Is there any nodule in this image?", "yes", "closed", "train"),
             _vqa("v3", "Is there any nodule in this image?", "no", "closed", "train"),
             _vqa("v4", "Is there a nodule in the left lung?", "yes", "closed", "train")]
    report, answer = majority_predictor(train)
    # Most common count: 1 (four studies); among them right 2 (t1, t2) and left 2 (t3, t7): a tie, which
    # goes to the smaller key, ("left",) < ("right",).
    guess = report(ONE_RIGHT)
    assert guess.count == {"right": 0, "left": 1}
    assert guess.lesions == {"right": (), "left": ((15.0, "moderate"),)}  # mode diameter of this base
    assert report(_findings(mm_per_px=0.7)).lesions["left"] == ((9.0, "small"),)  # its own base's mode
    assert answer(_vqa("x", "is there any nodule in this image? ", "no", "closed")) == "yes"
    assert answer(_vqa("y", "Is there a lesion in the left paraspinal region?", "no", "closed")) == "yes"  # type
    val = [_report("a", _findings(("left", 16, "moderate"))), _report("b", ONE_RIGHT), _report("c", NORMAL),
           _vqa("q", "Is there any nodule in this image?", "yes", "closed")]
    s = score_majority(val, train, tol=2)
    assert s["presence"] == pytest.approx(2 / 3) and s["laterality"] == pytest.approx(1 / 2)
    assert s["count"] == pytest.approx(2 / 3) and s["measurement"] == pytest.approx(1 / 2)
    assert s["exact"] == pytest.approx(1 / 3) and s["parse"] == 1.0 and s["vqa_closed"] == 1.0


def test_blank_requests_one_grey_image_per_prompt_and_size():
    records = [_report("a", ONE_RIGHT), _report("b", NORMAL),
               Record("c", "report", _png((120, 100)), PROMPT, "", findings=NORMAL),
               _vqa("q", "How many nodules are there?", "one", "open"),
               Record("broken", "report", b"junk", PROMPT, "", findings=NORMAL)]
    requests, key_of = blank_requests(records)
    assert len(requests) == 3 and set(key_of) == {"a", "b", "c", "q"}
    assert key_of["a"] == key_of["b"] != key_of["c"]
    for req in requests:
        assert req.image.getextrema() == ((128, 128),) * 3
    assert {req.image.size for req in requests} == {(112, 112), (120, 100)}


def test_table_lists_each_result_and_the_counts():
    results = {"model": score_outputs([_report("a", ONE_RIGHT)], {}, tol=2),
               "majority": score_majority([_report("a", ONE_RIGHT)], [_report("t", ONE_RIGHT, "train")], tol=2)}
    lines = format_table(results).splitlines()
    assert lines[0].split() == ["metric", "model", "majority", "n"]
    parse = next(line for line in lines if line.startswith("parse rate"))
    assert parse.split()[-3:] == ["0.0%", "100.0%", "1"]
    assert not any(line.startswith("VQA") for line in lines)  # no VQA record: no VQA row
