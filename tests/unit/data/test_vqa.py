"""VQA pairs of the embedded data: every answer is what the study's findings say."""
import re

import pytest

pytestmark = pytest.mark.unit

WORDS = ["zero", "one", "two", "three"]


def expected_answer(question: str, f: dict, lesions: list[dict]) -> str:
    """The answer a reader of the findings gives, from the question text alone."""
    yes = {True: "yes", False: "no"}
    if m := re.fullmatch(r"Is there a \w+ in the (right|left) .+\?", question):
        return yes[f["count"][m.group(1)] > 0]
    if re.fullmatch(r"Is there any \w+ in this image\?", question):
        return yes[f["total"] > 0]
    if m := re.fullmatch(r"How many \w+s are in the (right|left) .+\?", question):
        return WORDS[f["count"][m.group(1)]]
    if re.fullmatch(r"How many \w+s are there\?", question):
        return WORDS[len(lesions)]
    if re.fullmatch(r"On which side (is|are) the \w+\?", question):
        sides = {les["side"] for les in lesions}
        return sides.pop() if len(sides) == 1 else "both"
    largest = max(lesions, key=lambda les: les["diameter_mm"]) if lesions else None
    if re.fullmatch(r"What is the size of the (largest )?\w+\?", question):
        return largest["size"]
    if re.fullmatch(r"How large is the (largest )?\w+ in mm\?", question):
        return f"{largest['diameter_mm']} mm"
    if m := re.fullmatch(r"Is the (largest )?\w+ (small|moderate|large)\?", question):
        return yes[largest["size"] == m.group(2)]
    if question == "What imaging modality is this?":
        return f["modality"]
    if m := re.fullmatch(r"Is this image an? (X-ray|CT|MRI)\?", question):
        return yes[m.group(1) == f["modality"]]
    raise AssertionError(f"unknown question form {question!r}")


def test_answers_match_findings(studies, questions):
    by_id = {s["study_id"]: s for s in studies}
    for q in questions:
        s = by_id[q["study_id"]]
        assert q["answer"] == expected_answer(q["question"], s["findings"], s["lesions"]), q
        assert q["answer_type"] == ("closed" if q["answer"] in ("yes", "no") else "open")
        assert q["split"] == s["split"]


def test_question_types_and_ids(studies, questions):
    assert {q["question_type"] for q in questions} == {"presence", "count", "side", "size", "modality"}
    assert len({q["qid"] for q in questions}) == len(questions)
    for s in studies:
        types = [q["question_type"] for q in questions if q["study_id"] == s["study_id"]]
        # side and size are asked only about a lesion that exists
        expected = ["presence", "count", "side", "size", "modality"] if s["lesions"] else \
            ["presence", "count", "modality"]
        assert types == expected
