"""The report grammar of the embedded dataset: structured findings -> a short templated report.

The reference critic and the finding labeler parse these reports, and the span editor swaps single
words in them, so the grammar below is a contract: change it only together with them (and bump
`medpo_ray.data.synth.GENERATOR_VERSION`).

Findings dict (the structured ground truth, `Record.findings` of every embedded record)
---------------------------------------------------------------------------------------
    {"modality": "X-ray" | "CT" | "MRI",
     "body_part": "chest" | "abdomen" | "shoulder",
     "region": "lung" | "paraspinal region" | "hemiabdomen" | "hemifield",
     "noun": "nodule" | "lesion",
     "count": {"right": int, "left": int},          # lesions per patient side, 0..3
     "total": int,                                   # count["right"] + count["left"], 0..3
     "mm_per_px": float,
     "lesions": [{"id": int,                         # instance id in the lesion mask (1..n)
                  "side": "right" | "left",          # patient side (image left = patient right)
                  "cx": int, "cy": int,              # centre pixel (column, row)
                  "r_px": float,                     # radius in pixels (multiple of 0.25)
                  "diameter_mm": int,                # round(2 * r_px * mm_per_px)
                  "size": "small" | "moderate" | "large",   # < 10 mm <= moderate < 20 mm <= large
                  "bbox": [x0, y0, x1, y1],          # ints, x1/y1 exclusive
                  "polarity": "bright" | "dark"}, ...]}      # right side first, then top to bottom

Report
------
    REPORT     := "FINDINGS: " SIDE(right) " " SIDE(left) " IMPRESSION: " IMPRESSION
Sentences end with "." and contain no other period; words are separated by single spaces.

SIDE(s), with n = count[s], N = noun, R = region, and the lesions of side s in list order:
    n = 0, one of:   "No N in the s R."
                     "There is no N in the s R."
                     "No N is seen in the s R."
    n = 1, one of:   "A D mm Z N in the s R."
                     "There is a D mm Z N in the s R."
                     "A Z N in the s R measures D mm."
    n = 2 or 3:      "C Ns in the s R: ITEMS."            (C capitalised: "Two", "Three")
                     "There are c Ns in the s R: ITEMS."  (c lower case)
    ITEMS := "D1 mm Z1 and D2 mm Z2" | "D1 mm Z1, D2 mm Z2 and D3 mm Z3"
IMPRESSION:
    total = 0, one of:   "No N."   "No N identified."   "No N is seen."
    total >= 1:          CLAUSE(right) [" and " CLAUSE(left)] "."    (only the sides with n >= 1)
                 or, when exactly one side has lesions, also:
                         CLAUSE(s) "; no " other(s) "-sided N."
    CLAUSE(s) := "c Z s-sided N" (n = 1) | "c s-sided Ns" (n >= 2); the first word is capitalised.

Words: side s in {right, left} (impression: "right-sided", "left-sided"; a `\\w+` tokenizer sees
"right", "-", "sided"); size Z in {small, moderate, large}; count c in {one, two, three}
(capitalised at a sentence start); measurement "D mm" with D a whole number of millimetres;
negation "no" / "No" (the only negation cue); plural = noun + "s" ("nodules", "lesions").

Example (CXR, one 12 mm lesion on the patient's right):
    FINDINGS: A 12 mm moderate nodule in the right lung. No nodule in the left lung.
    IMPRESSION: One moderate right-sided nodule.
Every claim sits in one word, so a single-word edit changes exactly one claim: right<->left,
small<->moderate<->large, one<->two<->three, "12 mm"<->"17 mm", and presence "No nodule in the
left lung." <-> "A nodule in the left lung.". Parsers should therefore be lenient where an edit
leaves agreement behind: the size word and the plural "s" of a CLAUSE are optional whatever c
says, C need not equal the number of ITEMS, and the minimal positive form "A N in the s R." (no
measurement; never generated) is a presence claim.
"""
from __future__ import annotations

import numpy as np

from medpo_ray.data.lesions import SIDES

REPORT_PROMPT = "Write the findings and impression of a radiology report for this image."
COUNT_WORDS = ("zero", "one", "two", "three")

_NEGATIVE = ("No {N} in the {s} {R}.", "There is no {N} in the {s} {R}.", "No {N} is seen in the {s} {R}.")
_SINGLE = ("A {D} mm {Z} {N} in the {s} {R}.", "There is a {D} mm {Z} {N} in the {s} {R}.",
           "A {Z} {N} in the {s} {R} measures {D} mm.")
_MULTI = ("{C} {N}s in the {s} {R}: {items}.", "There are {c} {N}s in the {s} {R}: {items}.")
_NORMAL = ("No {N}.", "No {N} identified.", "No {N} is seen.")


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _items(lesions: list[dict]) -> str:
    parts = [f"{les['diameter_mm']} mm {les['size']}" for les in lesions]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _side_sentence(rng: np.random.Generator, findings: dict, side: str) -> str:
    lesions = [les for les in findings["lesions"] if les["side"] == side]
    slots = {"N": findings["noun"], "R": findings["region"], "s": side}
    if not lesions:
        return _pick(rng, _NEGATIVE).format(**slots)
    if len(lesions) == 1:
        les = lesions[0]
        return _pick(rng, _SINGLE).format(D=les["diameter_mm"], Z=les["size"], **slots)
    c = COUNT_WORDS[len(lesions)]
    return _pick(rng, _MULTI).format(C=c.capitalize(), c=c, items=_items(lesions), **slots)


def _clause(findings: dict, side: str) -> str:
    lesions = [les for les in findings["lesions"] if les["side"] == side]
    c, noun = COUNT_WORDS[len(lesions)], findings["noun"]
    if len(lesions) == 1:
        return f"{c} {lesions[0]['size']} {side}-sided {noun}"
    return f"{c} {side}-sided {noun}s"


def _impression(rng: np.random.Generator, findings: dict) -> str:
    noun = findings["noun"]
    sides = [s for s in SIDES if any(les["side"] == s for les in findings["lesions"])]
    if not sides:
        return _pick(rng, _NORMAL).format(N=noun)
    text = " and ".join(_clause(findings, s) for s in sides)
    text = text[0].upper() + text[1:]
    # Naming the clear side is only unambiguous when all lesions sit on one side.
    if len(sides) == 1 and int(rng.integers(2)):
        other = SIDES[1 - SIDES.index(sides[0])]
        return f"{text}; no {other}-sided {noun}."
    return text + "."


def render_report(findings: dict, rng: np.random.Generator) -> str:
    """Findings + impression text for structured findings, paraphrases drawn from `rng`."""
    sentences = " ".join(_side_sentence(rng, findings, s) for s in SIDES)
    return f"FINDINGS: {sentences} IMPRESSION: {_impression(rng, findings)}"
