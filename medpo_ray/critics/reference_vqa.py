"""The reference critic on VQA answers: find the one answer word in y0 and compare it with the target.

Answers are short ("yes", "two", "left", "both", "moderate", "12 mm", "CT"); y0 may also be a sentence
that holds exactly one answer word of the question's kind. The edit replaces that word (the answer
clause) and nothing else; for a measurement, only the number.
"""
from __future__ import annotations

import re

from medpo_ray.critics.answer import abstain
from medpo_ray.critics.base import CriticVerdict, Edit
from medpo_ray.data.record import Record

VOCAB = {
    "presence": ("yes", "no"),
    "count": ("zero", "one", "two", "three"),
    "side": ("right", "left", "both"),
    "size": ("small", "moderate", "large"),
    "modality": ("X-ray", "CT", "MRI"),
}
_KIND = {"presence": "presence", "count": "count", "side": "laterality", "size": "size", "modality": "organ"}
_MM = re.compile(r"(?<![\w.])(\d+) ?mm\b")


def _kind_of(record: Record) -> str | None:
    # The target's own vocabulary decides: a closed size or modality question is answered yes/no.
    target = record.target.strip().rstrip(".").lower()
    for kind, words in VOCAB.items():
        if target in (w.lower() for w in words):
            return kind
    if _MM.fullmatch(target):
        return "size"
    return record.question_type if record.question_type in VOCAB else None


def _hits(y0: str, kind: str) -> list[re.Match]:
    words = "|".join(re.escape(w) for w in VOCAB[kind])
    hits = list(re.finditer(rf"(?<![\w-])(?:{words})(?![\w-])", y0, re.I))
    return hits + list(_MM.finditer(y0)) if kind == "size" else hits


def _cased(old: str, new: str) -> str:
    if new in VOCAB["modality"]:
        return new
    return new[:1].upper() + new[1:] if old[:1].isupper() else new


def _edit(y0: str, span: tuple[int, int], new: str, kind: str) -> Edit:
    return Edit(y0[span[0]:span[1]], new, span[0], kind)


def _answer_hit(record: Record, y0: str) -> tuple[str, re.Match] | str:
    # (kind, the one answer word of y0) or the abstention detail.
    kind = _kind_of(record)
    if kind is None:
        return f"no answer kind for target {record.target!r}"
    hits = _hits(y0, kind)
    if len(hits) != 1:
        return f"{len(hits)} {kind} answers in {y0[:80]!r}"
    return kind, hits[0]


def vqa_counterfactuals(record: Record, y0: str, tol: float) -> list[tuple[str, Edit]]:
    """Every counterfactual of an agreeing answer with its balance key (critics/balance.py): each other
    answer word of the question's kind ("vqa-presence:yes>no"), a measurement moved down and up."""
    found = _answer_hit(record, y0)
    if isinstance(found, str):
        return []
    kind, hit = found
    # Balanced per question type: "no" is the usual right answer to "Is this image an MRI?" and "yes" to
    # "Is there a nodule?", so yes/no swaps balanced only overall still pushed "no" down on modality
    # questions and "yes" on presence questions (measured: VQA accuracy fell while reports improved).
    asked = record.question_type or kind
    if hit.re is _MM:
        y, shift = int(hit.group(1)), max(5, int(2 * tol) + 1)
        moves = [("down", y - shift)] if y - shift >= 1 else []
        return [(f"vqa-{asked}-mm:{d}", _edit(y0, hit.span(1), str(v), "measurement"))
                for d, v in [*moves, ("up", y + shift)]]
    edit_kind = _KIND[record.question_type if record.question_type in _KIND else kind]
    old = hit.group(0)
    return [(f"vqa-{asked}:{old.lower()}>{w.lower()}", _edit(y0, hit.span(), _cased(old, w), edit_kind))
            for w in VOCAB[kind] if w.lower() != old.lower()]


def review_vqa(record: Record, y0: str, tol: float, critic) -> CriticVerdict:
    """Verdict on a VQA answer: wrong with the replacement, or right with a balanced counterfactual
    answer (`critic.counterfactual`, see reference.py)."""
    found = _answer_hit(record, y0)
    if isinstance(found, str):
        return abstain("unreadable", found, critic.name)
    kind, hit = found
    edit_kind = _KIND[record.question_type if record.question_type in _KIND else kind]
    target = record.target.strip().rstrip(".")
    t_mm, y_mm = _MM.fullmatch(target), hit.re is _MM
    if y_mm and t_mm:
        y, t = int(hit.group(1)), int(t_mm.group(1))
        if abs(y - t) > tol:
            return CriticVerdict("wrong", (_edit(y0, hit.span(1), str(t), "measurement"),), critic.name,
                                 "measurement")
        return critic.counterfactual(record, vqa_counterfactuals(record, y0, tol))
    if hit.group(0).lower() != target.lower():
        new = _cased(hit.group(0), target)
        return CriticVerdict("wrong", (_edit(y0, hit.span(), new, edit_kind),), critic.name, f"{kind} answer")
    return critic.counterfactual(record, vqa_counterfactuals(record, y0, tol))
