"""VQA pairs from structured findings: presence, count, side, size and modality questions with
short answers, tagged closed (yes/no) or open as in VQA-RAD / SLAKE.

Answers: "yes" / "no"; counts "zero".."three"; side "right" / "left" / "both"; size bin "small" /
"moderate" / "large" or a measurement "12 mm" (of the largest lesion); modality "X-ray" / "CT" /
"MRI". Side and size questions are asked only when the study has a lesion.
"""
from __future__ import annotations

import numpy as np

from medpo_ray.data.lesions import SIDES
from medpo_ray.data.reports import COUNT_WORDS

MODALITIES = ("X-ray", "CT", "MRI")
_ARTICLE = {"X-ray": "an", "CT": "a", "MRI": "an"}


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _presence(rng: np.random.Generator, f: dict) -> tuple[str, str]:
    noun, region = f["noun"], f["region"]
    if int(rng.integers(2)):
        side = SIDES[int(rng.integers(2))]
        return f"Is there a {noun} in the {side} {region}?", _yes(f["count"][side] > 0)
    return f"Is there any {noun} in this image?", _yes(f["total"] > 0)


def _count(rng: np.random.Generator, f: dict) -> tuple[str, str]:
    noun, region = f["noun"], f["region"]
    if int(rng.integers(2)):
        side = SIDES[int(rng.integers(2))]
        return f"How many {noun}s are in the {side} {region}?", COUNT_WORDS[f["count"][side]]
    return f"How many {noun}s are there?", COUNT_WORDS[f["total"]]


def _side(f: dict) -> tuple[str, str]:
    noun = f["noun"]
    sides = [s for s in SIDES if f["count"][s] > 0]
    answer = sides[0] if len(sides) == 1 else "both"
    if f["total"] == 1:
        return f"On which side is the {noun}?", answer
    return f"On which side are the {noun}s?", answer


def _size(rng: np.random.Generator, f: dict) -> tuple[str, str, str]:
    noun = f["noun"]
    largest = max(f["lesions"], key=lambda les: les["diameter_mm"])
    which = noun if f["total"] == 1 else f"largest {noun}"
    kind = int(rng.integers(3))
    if kind == 0:
        return f"What is the size of the {which}?", largest["size"], "open"
    if kind == 1:
        return f"How large is the {which} in mm?", f"{largest['diameter_mm']} mm", "open"
    asked = ("small", "moderate", "large")[int(rng.integers(3))]
    return f"Is the {which} {asked}?", _yes(largest["size"] == asked), "closed"


def _modality(rng: np.random.Generator, f: dict) -> tuple[str, str, str]:
    if int(rng.integers(2)):
        return "What imaging modality is this?", f["modality"], "open"
    asked = MODALITIES[int(rng.integers(len(MODALITIES)))]
    return f"Is this image {_ARTICLE[asked]} {asked}?", _yes(asked == f["modality"]), "closed"


def make_questions(findings: dict, rng: np.random.Generator) -> list[dict]:
    """Question dicts {question_type, question, answer, answer_type} for one study."""
    rows = []
    q, a = _presence(rng, findings)
    rows.append(("presence", q, a, "closed"))
    q, a = _count(rng, findings)
    rows.append(("count", q, a, "open"))
    if findings["total"] > 0:
        q, a = _side(findings)
        rows.append(("side", q, a, "open"))
        rows.append(("size", *_size(rng, findings)))
    rows.append(("modality", *_modality(rng, findings)))
    return [{"question_type": t, "question": q, "answer": a, "answer_type": at} for t, q, a, at in rows]
