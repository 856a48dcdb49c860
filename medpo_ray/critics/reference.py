"""The reference critic: rules over a record's structured ground truth (the embedded data's findings).

It reads y0 with the labeler (embedded_reading.py), compares every statement with the lesions of the
side it names, and answers
- "wrong" with the minimal word swaps that make y0 agree (branch A), or
- "right" with ONE minimal, plausible counterfactual swap chosen deterministically by record id
  (branch B), or
- "abstain" with a reason when it cannot read y0 or when agreeing would take more than word swaps.

Edit policy (what counts as "minimal"): only single words are replaced, in place, at exact offsets:
a side word (right <-> left, also inside "right-sided"), a size word, a count word, a measurement's
number, and, for presence, the negation word of a bare FINDINGS side sentence ("No nodule in the left
lung." <-> "A nodule in the left lung."). Never inserted or deleted: a sentence or clause, an item of
a lesion list, a plural ending. A measurement within `measurement_tolerance_mm` of the truth agrees
(the same tolerance as the structured-accuracy metric). At most `max_changed_words_per_sentence`
words change in one sentence, else the critic abstains.
"""
from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence

from medpo_ray.critics.answer import abstain
from medpo_ray.critics.base import Critic, CriticVerdict, Edit
from medpo_ray.critics.embedded_reading import Statement, Unreadable, read_report
from medpo_ray.critics.reference_vqa import review_vqa
from medpo_ray.data.record import Record
from medpo_ray.data.reports import COUNT_WORDS
from medpo_ray.labeler import Attr, Span

SIDES = ("right", "left")
SIZES = ("small", "moderate", "large")
_OTHER_SIZE = {"small": "moderate", "moderate": "large", "large": "moderate"}


def stable_hash(*parts: str) -> int:
    """A hash of strings that is the same in every process (unlike hash())."""
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "big")


def swap(span: Span, new: str, kind: str) -> Edit:
    """Replace the word at `span` by `new`, keeping a capital first letter."""
    if span.text[:1].isupper():
        new = new[:1].upper() + new[1:]
    return Edit(span.text, new, span.start, kind)


def _number(m: Attr, mm: float) -> str:
    value = mm / 10 if m.unit.lower().startswith("c") else mm
    return f"{value:g}"


def _fix(st: Statement, lesions: list[dict], tol: float) -> list[Edit] | None:
    """Edits that make `st` agree with `lesions` (one side's truth), or None if swaps cannot."""
    n = len(lesions)
    bare = not st.items and not st.plural
    if not st.present:
        if n == 0:
            return []
        cue = st.claim.cue
        if st.section == "findings" and n == 1 and cue is not None and cue.text.lower() == "no":
            return [swap(cue, "a", "presence")]
        return None
    if n == 0:
        if st.section == "findings" and bare and st.count.span.text.lower() in ("a", "an"):
            return [swap(st.count.span, "no", "presence")]
        return None
    shape = st.shape_count
    if (shape == 1) != (n == 1) or (shape is not None and shape != n):
        return None
    edits = []
    if st.count.value != n:
        word = "a" if st.section == "findings" and n == 1 else COUNT_WORDS[n]
        edits.append(swap(st.count.span, word, "count"))
    truth = [(les["diameter_mm"], les["size"]) for les in lesions]
    listed = [(it.measurement.value if it.measurement else None, it.size.value if it.size else None)
              for it in st.items]
    if sorted(listed, key=str) == sorted(truth, key=str):
        return edits  # the same lesions in another order
    for it, (mm, size) in zip(st.items, truth, strict=False):
        if it.measurement is not None and abs(it.measurement.value - mm) > tol:
            edits.append(swap(it.measurement.span, _number(it.measurement, mm), "measurement"))
        if it.size is not None and it.size.value != size:
            edits.append(swap(it.size.span, size, "size"))
    return edits


def _options(st: Statement, truth: dict[str, list[dict]], tol: float) -> list[tuple[str | None, list[Edit]]]:
    """(side the statement ends up naming, edits) for keeping its side and for swapping it."""
    if st.side is None:  # "No nodule." speaks for the whole study
        return [(None, [])] if not (truth["right"] or truth["left"]) else []
    side = st.side.value
    if side not in SIDES:
        return []
    other = SIDES[1 - SIDES.index(side)]
    out = []
    keep = _fix(st, truth[side], tol)
    if keep is not None:
        out.append((side, keep))
    moved = _fix(st, truth[other], tol)
    if moved is not None:
        out.append((other, [swap(st.side.span, other, "laterality"), *moved]))
    return out


def _consistent(findings: Sequence[Statement], impression: Sequence[Statement], sides: Sequence[str | None],
                truth: dict[str, list[dict]]) -> bool:
    f_sides = sides[:len(findings)]
    if sorted(f_sides, key=str) != sorted(SIDES):
        return False
    positive, negative = [], []
    for st, side in zip(impression, sides[len(findings):], strict=True):
        if side is None and len(impression) > 1:
            return False
        (positive if st.present else negative).append(side)
    with_lesions = {s for s in SIDES if truth[s]}
    return (len(positive) == len(set(positive)) and set(positive) == with_lesions
            and len(negative) == len(set(negative)) and not set(negative) & set(positive))


def best_fix(findings, impression, truth, tol: float) -> list[Edit] | None:
    """The fewest edits that make the report agree (ties: sides in report order right, left)."""
    statements = [*findings, *impression]
    choices = [_options(st, truth, tol) for st in statements]
    best = None
    for combo in itertools.product(*choices):
        sides = [side for side, _ in combo]
        if not _consistent(findings, impression, sides, truth):
            continue
        edits = [e for _, es in combo for e in es]
        named = [s for st, s in zip(impression, sides[len(findings):], strict=True) if st.present]
        order = (sides[:len(findings)] != list(SIDES)) + (named != sorted(named, key=SIDES.index))
        swaps = sum(e.kind == "laterality" for e in edits)
        key = (len(edits), order, swaps)
        if best is None or key < best[0]:
            best = (key, edits)
    return None if best is None else best[1]


def counterfactuals(findings, impression, tol: float) -> list[Edit]:
    """Every single-word swap that turns an agreeing report into a plausible wrong one."""
    shift = max(5, math.ceil(2 * tol) + 1)
    out: list[Edit] = []
    for st in findings:
        if not st.present:
            if st.claim.cue is not None and st.claim.cue.text.lower() == "no":
                out.append(swap(st.claim.cue, "a", "presence"))
            continue
        if st.plural:
            out.append(swap(st.count.span, COUNT_WORDS[2 if st.count.value == 3 else 3], "count"))
        for it in st.items:
            if it.measurement is not None:
                mm = it.measurement.value
                new = mm - shift if mm - shift >= 1 else mm + shift
                out.append(swap(it.measurement.span, _number(it.measurement, new), "measurement"))
            if it.size is not None:
                out.append(swap(it.size.span, _OTHER_SIZE[it.size.value], "size"))
    named = {st.side.value for st in impression if st.present}
    for st in impression:
        if not st.present:
            continue
        if st.plural:
            out.append(swap(st.count.span, COUNT_WORDS[2 if st.count.value == 3 else 3], "count"))
        for it in st.items:
            out.append(swap(it.size.span, _OTHER_SIZE[it.size.value], "size"))
        other = SIDES[1 - SIDES.index(st.side.value)]
        if other not in named:
            out.append(swap(st.side.span, other, "laterality"))
    return out


def _per_sentence(edits: list[Edit], statements: Sequence[Statement]) -> int:
    counts: dict[int, int] = {}
    for e in edits:
        s = next(st.claim.sentence for st in statements
                 if st.claim.sentence.start <= e.start < st.claim.sentence.end)
        counts[s.start] = counts.get(s.start, 0) + 1
    return max(counts.values(), default=0)


class ReferenceCritic(Critic):
    """Exact rules over structured findings; abstains on anything it cannot read."""

    name = "reference"

    def __init__(self, measurement_tolerance_mm: float = 2.0, max_changed_words_per_sentence: int = 3):
        self.tol = measurement_tolerance_mm
        self.max_per_sentence = max_changed_words_per_sentence

    def review(self, record: Record, y0: str) -> CriticVerdict:
        """Judge y0 against record.findings (reports) or record.target (VQA answers)."""
        if record.task == "vqa":  # the target answer is the truth; no findings needed
            return review_vqa(record, y0, self.tol, stable_hash(record.record_id), self.name)
        f = record.findings
        if not f or "lesions" not in f:
            return abstain("no_findings", f"record {record.record_id!r} has no structured lesions", self.name)
        truth = {s: [les for les in f["lesions"] if les["side"] == s] for s in SIDES}
        try:
            findings, impression = read_report(y0, f["noun"], f["region"])
        except Unreadable as e:
            return abstain("unreadable", str(e)[:300], self.name)
        edits = best_fix(findings, impression, truth, self.tol)
        if edits is None:
            return abstain("structural", "agreeing with the truth needs more than word swaps", self.name)
        if not edits:
            options = counterfactuals(findings, impression, self.tol)
            if not options:
                return abstain("no_counterfactual", "no single-word counterfactual in this report", self.name)
            return CriticVerdict("right", (options[stable_hash(record.record_id) % len(options)],), self.name,
                                 "y0 agrees with the findings")
        worst = _per_sentence(edits, [*findings, *impression])
        if worst > self.max_per_sentence:
            return abstain("too_many_changes", f"{worst} words in one sentence (limit {self.max_per_sentence})",
                           self.name)
        return CriticVerdict("wrong", tuple(sorted(edits, key=lambda e: e.start)), self.name,
                             ", ".join(sorted({e.kind for e in edits})))
