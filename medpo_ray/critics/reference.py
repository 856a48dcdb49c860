"""The reference critic: rules over a record's structured ground truth (the embedded data's findings).

It reads y0 with the labeler (embedded_reading.py), compares every statement with the lesions of the
side it names, and answers
- "wrong" with the minimal word swaps that make y0 agree (branch A), or
- "right" with ONE minimal, plausible counterfactual swap, chosen deterministically by record id so
  that each swap is used in both directions about equally often (critics/balance.py; branch B), or
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
from collections.abc import Mapping, Sequence
from dataclasses import replace

from medpo_ray.critics import balance, report_labeler, vqa_answers
from medpo_ray.critics.answer import abstain
from medpo_ray.critics.base import Critic, CriticVerdict, Edit, embedded, swap
from medpo_ray.critics.embedded_reading import Statement, Unreadable, read_report
from medpo_ray.critics.reference_vqa import review_vqa, vqa_counterfactuals
from medpo_ray.critics.vqa_answers import AnswerVocabulary
from medpo_ray.data.record import Record
from medpo_ray.data.reports import COUNT_WORDS
from medpo_ray.labeler import Attr, Span

SIDES = ("right", "left")
SIZES = ("small", "moderate", "large")
_OTHER_SIZE = {"small": "moderate", "moderate": "large", "large": "moderate"}


def stable_hash(*parts: str) -> int:
    """A hash of strings that is the same in every process (unlike hash())."""
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "big")


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


def _word(text: str) -> str:
    return text.lower()


def _count_swaps(st: Statement) -> list[tuple[str, Edit]]:
    # Two <-> three on a plural statement, in both directions (the list's length stays as it was).
    old = st.count.value
    new = 2 if old == 3 else 3
    return [(f"count:{COUNT_WORDS[old]}>{COUNT_WORDS[new]}", swap(st.count.span, COUNT_WORDS[new], "count"))]


def _size_swaps(span: Span, size: str) -> list[tuple[str, Edit]]:
    # Every neighbouring size, so small->moderate is mirrored by moderate->small.
    i = SIZES.index(size)
    return [(f"size:{size}>{SIZES[j]}", swap(span, SIZES[j], "size")) for j in (i - 1, i + 1) if 0 <= j < len(SIZES)]


def counterfactuals(findings, impression, tol: float) -> list[tuple[str, Edit]]:
    """Every single-word swap that turns an agreeing report into a plausible wrong one, each with its
    balance key (critics/balance.py): presence both ways ("No nodule" -> "A nodule", and a positive
    sentence's count word -> "No"), sizes to each neighbour, measurements up and down, counts two <-> three,
    an impression side to the side not named."""
    shift = max(5, math.ceil(2 * tol) + 1)
    out: list[tuple[str, Edit]] = []
    for st in findings:
        if not st.present:
            if st.claim.cue is not None and st.claim.cue.text.lower() == "no":
                out.append(("presence:no>a", swap(st.claim.cue, "a", "presence")))
            continue
        # "A 12 mm moderate nodule ..." -> "No 12 mm moderate nodule ...": the mask holds only the count
        # word, so the words after it are shared context of y+ and y-, not claims of y-.
        out.append((f"presence:{_word(st.count.span.text)}>no", swap(st.count.span, "no", "presence")))
        if st.plural:
            out += _count_swaps(st)
        for it in st.items:
            if it.measurement is not None:
                mm = it.measurement.value
                if mm - shift >= 1:
                    out.append(("measurement:down", swap(it.measurement.span, _number(it.measurement, mm - shift),
                                                         "measurement")))
                out.append(("measurement:up", swap(it.measurement.span, _number(it.measurement, mm + shift),
                                                   "measurement")))
            if it.size is not None:
                out += _size_swaps(it.size.span, it.size.value)
    named = {st.side.value for st in impression if st.present}
    for st in impression:
        if not st.present:
            continue
        if st.plural:
            out += _count_swaps(st)
        for it in st.items:
            out += _size_swaps(it.size.span, it.size.value)
        other = SIDES[1 - SIDES.index(st.side.value)]
        if other not in named:
            out.append((f"laterality:{st.side.value}>{other}", swap(st.side.span, other, "laterality")))
    return out


def _per_sentence(edits: list[Edit], statements: Sequence[Statement]) -> int:
    counts: dict[int, int] = {}
    for e in edits:
        s = next(st.claim.sentence for st in statements
                 if st.claim.sentence.start <= e.start < st.claim.sentence.end)
        counts[s.start] = counts.get(s.start, 0) + 1
    return max(counts.values(), default=0)


class ReferenceCritic(Critic):
    """Exact rules over structured findings (embedded data), the labeler over real reports
    (report_labeler.py), normalised answers over real VQA (vqa_answers.py); abstains on what it cannot read."""

    name = "reference"

    def __init__(self, measurement_tolerance_mm: float = 2.0, max_changed_words_per_sentence: int = 3,
                 keep_rates: Mapping[str, float] | None = None, vocab: AnswerVocabulary | None = None):
        self.tol = measurement_tolerance_mm
        self.max_per_sentence = max_changed_words_per_sentence
        # Real VQA: the training split's answers per question type, the source of counterfactual answers.
        self.vocab = vocab if vocab is not None else AnswerVocabulary({})
        # Per counterfactual key, the share kept so that each swap is used as often in both directions
        # (critics/balance.py); None keeps every one (evaluation, where only "wrong" verdicts count).
        self.keep_rates = dict(keep_rates) if keep_rates is not None else None

    def set_keep_rates(self, keep_rates: Mapping[str, float] | None) -> None:
        """New keep rates (the driver refits them on the counterfactuals the policy's answers offer)."""
        self.keep_rates = dict(keep_rates) if keep_rates is not None else None

    def counterfactual(self, record: Record, options: Sequence[tuple[str, Edit]]) -> CriticVerdict:
        """Branch B: one balanced counterfactual of the options, or an abstention ("balance" when its
        direction is over-used in the data, "no_counterfactual" when there is none)."""
        if not options:
            return abstain("no_counterfactual", "no single-word counterfactual in this answer", self.name)
        seed = stable_hash(record.record_id)
        key, edit = balance.choose(options, seed)
        if not balance.kept(key, self.keep_rates, seed):
            dropped = abstain("balance", f"counterfactual {key} dropped to keep its mirror's rate", self.name)
            return replace(dropped, counterfactual=key)
        return CriticVerdict("right", (edit,), self.name, f"y0 agrees; counterfactual {key}", counterfactual=key)

    def counterfactual_keys(self, record: Record) -> list[str]:
        """The balance keys of the counterfactuals the gold answer of `record` offers (for fitting keep
        rates: a gold answer is right, so it would get one of them); [] when it offers none."""
        if record.task == "vqa":
            if not embedded(record):
                return [k for k, _ in vqa_answers.counterfactuals(record, record.target, self.vocab)]
            return [k for k, _ in vqa_counterfactuals(record, record.target, self.tol)]
        f = record.findings
        if not embedded(record):
            return [k for k, _ in report_labeler.counterfactuals(record.target, report_labeler.truths(record.target))]
        try:
            findings, impression = read_report(record.target, f["noun"], f["region"])
        except Unreadable:
            return []
        return [k for k, _ in counterfactuals(findings, impression, self.tol)]

    def review(self, record: Record, y0: str) -> CriticVerdict:
        """Judge y0 against record.findings (reports) or record.target (VQA answers)."""
        if record.task == "vqa":  # the target answer is the truth; no findings needed
            if not embedded(record):
                return vqa_answers.review(record, y0, self.vocab, self)
            return review_vqa(record, y0, self.tol, self)
        f = record.findings
        if not embedded(record):  # a real report: its reference text, read by the labeler, is the truth
            return report_labeler.review(record, y0, self.tol, self.max_per_sentence, self)
        truth = {s: [les for les in f["lesions"] if les["side"] == s] for s in SIDES}
        try:
            findings, impression = read_report(y0, f["noun"], f["region"])
        except Unreadable as e:
            return abstain("unreadable", str(e)[:300], self.name)
        edits = best_fix(findings, impression, truth, self.tol)
        if edits is None:
            return abstain("structural", "agreeing with the truth needs more than word swaps", self.name)
        if not edits:
            return self.counterfactual(record, counterfactuals(findings, impression, self.tol))
        worst = _per_sentence(edits, [*findings, *impression])
        if worst > self.max_per_sentence:
            return abstain("too_many_changes", f"{worst} words in one sentence (limit {self.max_per_sentence})",
                           self.name)
        ordered = tuple(sorted(edits, key=lambda e: e.start))
        if not self._reads_right(y0, ordered, f, truth):
            # A lenient reading of a garbled sentence ("No is small 7 mm small nodule") can yield a fix that
            # itself does not read as right: such a pair would teach text the critic cannot vouch for.
            return abstain("structural", "the corrected text does not read back as right", self.name)
        return CriticVerdict("wrong", ordered, self.name, ", ".join(sorted({e.kind for e in edits})))

    def _reads_right(self, y0: str, edits: tuple[Edit, ...], f: dict, truth: dict) -> bool:
        fixed = y0
        for e in reversed(edits):
            fixed = fixed[:e.start] + e.new + fixed[e.start + len(e.old):]
        try:
            findings, impression = read_report(fixed, f["noun"], f["region"])
        except Unreadable:
            return False
        return best_fix(findings, impression, truth, self.tol) == []
