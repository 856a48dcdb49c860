"""The report grammar: reports parse back (with a parser written here from the documented grammar)
to exactly the findings they were rendered from, every paraphrase occurs, single-word edits parse."""
import re

import numpy as np
import pytest

from medpo_ray.data.lesions import size_bin
from medpo_ray.data.reports import render_report

pytestmark = pytest.mark.unit

COUNTS = {"one": 1, "two": 2, "three": 3}
SIZES = "small|moderate|large"
BASES = [("nodule", "lung"), ("lesion", "paraspinal region"), ("lesion", "hemiabdomen"), ("lesion", "hemifield")]


def parse(report: str, noun: str, region: str) -> tuple[dict, dict, set]:
    """(findings side -> [(mm, size)] or [] , impression side -> (count, size|None), forms used)."""
    n, r = re.escape(noun), re.escape(region)
    m = re.fullmatch(r"FINDINGS: (.+?) IMPRESSION: (.+)", report)
    assert m, report
    sentences = re.split(r"(?<=\.) ", m.group(1))
    findings, forms = {}, set()
    patterns = {
        "neg0": rf"No {n} in the (right|left) {r}\.",
        "neg1": rf"There is no {n} in the (right|left) {r}\.",
        "neg2": rf"No {n} is seen in the (right|left) {r}\.",
        "one0": rf"A (\d+) mm ({SIZES}) {n} in the (right|left) {r}\.",
        "one1": rf"There is a (\d+) mm ({SIZES}) {n} in the (right|left) {r}\.",
        "one2": rf"A ({SIZES}) {n} in the (right|left) {r} measures (\d+) mm\.",
        "multi0": rf"(Two|Three) {n}s in the (right|left) {r}: (.+)\.",
        "multi1": rf"There are (two|three) {n}s in the (right|left) {r}: (.+)\.",
    }
    for sentence in sentences:
        form, g = next(((f, hit) for f, p in patterns.items() if (hit := re.fullmatch(p, sentence))), (None, None))
        assert g, f"unparsed sentence {sentence!r}"
        forms.add(form)
        if form.startswith("neg"):
            findings[g.group(1)] = []
        elif form in ("one0", "one1"):
            findings[g.group(3)] = [(int(g.group(1)), g.group(2))]
        elif form == "one2":
            findings[g.group(2)] = [(int(g.group(3)), g.group(1))]
        else:
            items = re.fullmatch(rf"(\d+ mm (?:{SIZES}))(?:, (\d+ mm (?:{SIZES})))? and (\d+ mm (?:{SIZES}))", g.group(3))
            assert items, sentence
            parsed = [tuple(i.split(" mm ")) for i in items.groups() if i]
            findings[g.group(2)] = [(int(mm), size) for mm, size in parsed]
            assert COUNTS[g.group(1).lower()] == len(parsed), sentence
    impression = {}
    text = m.group(2)
    if re.fullmatch(rf"No {n}\.|No {n} identified\.|No {n} is seen\.", text):
        forms.add("normal")
        return findings, impression, forms
    g = re.fullmatch(rf"(.+?)(?:; no (right|left)-sided {n})?\.", text)
    assert g, text
    forms.add("imp_other" if g.group(2) else "imp_plain")
    for clause in g.group(1).split(" and "):
        c = re.fullmatch(rf"(one|two|three) (?:({SIZES}) )?(right|left)-sided {n}(s?)", clause, re.IGNORECASE)
        assert c, clause
        impression[c.group(3)] = (COUNTS[c.group(1).lower()], c.group(2))
    if g.group(2):
        impression.setdefault(g.group(2), (0, None))
        assert impression[g.group(2)][0] == 0
    return findings, impression, forms


def make_findings(rng: np.random.Generator, n_right: int, n_left: int, noun: str, region: str) -> dict:
    lesions = []
    for side, n in (("right", n_right), ("left", n_left)):
        for _ in range(n):
            mm = int(rng.integers(3, 60))
            lesions.append({"id": len(lesions) + 1, "side": side, "diameter_mm": mm, "size": size_bin(mm)})
    return {"noun": noun, "region": region, "count": {"right": n_right, "left": n_left},
            "total": n_right + n_left, "lesions": lesions}


CASES = [(nr, nl) for nr in range(4) for nl in range(4) if nr + nl <= 3]


def test_reports_parse_back_to_their_findings_and_use_every_paraphrase():
    forms_seen = set()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        for nr, nl in CASES:
            noun, region = BASES[seed % len(BASES)]
            f = make_findings(rng, nr, nl, noun, region)
            report = render_report(f, rng)
            findings, impression, forms = parse(report, noun, region)
            forms_seen |= forms
            for side in ("right", "left"):
                truth = [(les["diameter_mm"], les["size"]) for les in f["lesions"] if les["side"] == side]
                assert findings[side] == truth, report
                if truth:
                    count, size = impression[side]
                    assert count == len(truth), report
                    assert size == (truth[0][1] if len(truth) == 1 else None), report
                else:
                    assert impression.get(side, (0, None))[0] == 0, report
            assert report.index("the right") < report.index("the left")  # right side first
            assert len(report.split()) <= 50
    assert forms_seen == {"neg0", "neg1", "neg2", "one0", "one1", "one2", "multi0", "multi1",
                          "normal", "imp_plain", "imp_other"}


def test_documented_example_is_produced():
    f = {"noun": "nodule", "region": "lung", "count": {"right": 1, "left": 0}, "total": 1,
         "lesions": [{"id": 1, "side": "right", "diameter_mm": 12, "size": "moderate"}]}
    example = ("FINDINGS: A 12 mm moderate nodule in the right lung. No nodule in the left lung. "
               "IMPRESSION: One moderate right-sided nodule.")
    assert example in {render_report(f, np.random.default_rng(s)) for s in range(60)}


def test_same_rng_state_same_report():
    f = make_findings(np.random.default_rng(1), 2, 1, "lesion", "hemifield")
    assert render_report(f, np.random.default_rng(7)) == render_report(f, np.random.default_rng(7))


@pytest.mark.parametrize("old,new", [("right", "left"), ("moderate", "large"), ("12", "17"), ("One", "Two")])
def test_single_word_edits_still_parse_and_change_one_claim(old, new):
    f = {"noun": "nodule", "region": "lung", "count": {"right": 1, "left": 0}, "total": 1,
         "lesions": [{"id": 1, "side": "right", "diameter_mm": 12, "size": "moderate"}]}
    report = render_report(f, np.random.default_rng(0))
    before = parse(report, "nodule", "lung")[:2]
    words = re.findall(r"\w+|[^\w\s]", report)
    k = words.index(old)  # the first occurrence: a findings word, or the impression count
    edited = report.replace(f" {old} ", f" {new} ", 1) if old != "One" else report.replace("One", "Two")
    assert re.findall(r"\w+|[^\w\s]", edited)[:k] == words[:k]
    after = parse(edited, "nodule", "lung")[:2]
    assert after != before
