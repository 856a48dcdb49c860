"""The perturbation suite: inject one known error of each type into ground-truth answers and check
that a critic finds it and puts back exactly the original words, and never flags a clean answer.

Errors are injected with plain regular expressions over the words (not with the labeler the reference
critic reads with), so the suite is an independent check of that reading. Embedded reports: laterality
(right <-> left), size (small/moderate/large), count (a count word or the article of a single lesion),
measurement (the number of "D mm", shifted by 5), presence (the "No"/"no" of a FINDINGS side sentence
without lesions becomes "A"/"a"); VQA: a different answer of the same kind. Real reports (IU-Xray,
MIMIC-CXR), wherever the words occur: right <-> left, a severity to its neighbour (small/moderate/large,
mild/moderate/severe), a count word, a measurement's number (mm +-5, cm +1), presence (a "no" in front of
a word deleted: "There is no edema" -> "There is edema"); real VQA: another frequent answer of the
question type (vqa_answers.AnswerVocabulary).
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from medpo_ray.critics.base import Critic, CriticVerdict, embedded
from medpo_ray.critics.reference import stable_hash
from medpo_ray.critics.reference_vqa import VOCAB
from medpo_ray.critics.vqa_answers import AnswerVocabulary, normalize
from medpo_ray.data.record import Record
from medpo_ray.editing.pairs import PairLimits, PreferencePair, apply_edits, build_pair

ERROR_TYPES = ("laterality", "size", "count", "measurement", "presence", "vqa_answer")
_NUMBERS = ("one", "two", "three")
_SHIFT_MM = 5


@dataclass(frozen=True)
class Injection:
    """One injected error: its type, the perturbed text and the words swapped."""

    kind: str
    text: str
    start: int
    old: str
    new: str


def _cased(old: str, new: str) -> str:
    if new in VOCAB["modality"]:  # "X-ray", "CT", "MRI" are written one way only
        return new
    return new[:1].upper() + new[1:] if old[:1].isupper() else new


def _sites(record: Record, kind: str) -> list[tuple[int, int, Callable[[str, int], str]]]:
    """(start, end, new_word(old, seed)) for every place an error of `kind` can go."""
    text = record.target
    impression = text.find("IMPRESSION:")
    findings_end = impression if impression >= 0 else len(text)
    noun = re.escape((record.findings or {}).get("noun", "nodule"))

    def other(options):
        return lambda old, seed: _cased(old, [o for o in options if o != old.lower()][seed % (len(options) - 1)])

    if kind == "laterality":
        return [(m.start(), m.end(), other(("right", "left"))) for m in re.finditer(r"\b(?:right|left)\b", text)]
    if kind == "size":
        return [(m.start(), m.end(), other(("small", "moderate", "large")))
                for m in re.finditer(r"\b(?:small|moderate|large)\b", text)]
    if kind == "count":
        words = r"\b(?:one|two|three)\b|\ba\b(?= (?:\d+ mm|small|moderate|large) )"
        return [(m.start(), m.end(), other(_NUMBERS if m.group(0).lower() != "a" else ("a", "two", "three")))
                for m in re.finditer(words, text, re.I)]
    if kind == "measurement":
        return [(m.start(), m.end(), lambda old, seed: str(int(old) + (_SHIFT_MM if int(old) <= _SHIFT_MM or seed % 2
                                                                         else -_SHIFT_MM)))
                for m in re.finditer(r"\b\d+(?= mm\b)", text)]
    if kind == "presence":
        return [(m.start(), m.end(), lambda old, seed: _cased(old, "a"))
                for m in re.finditer(rf"\bno\b(?= {noun} (?:in|is seen in) the )", text[:findings_end], re.I)]
    return []


_LADDERS = (("small", "moderate", "large"), ("mild", "moderate", "severe"))


def _real_report_sites(text: str, kind: str) -> list[tuple[int, int, Callable[[str, int], str]]]:
    """Sites of an error of `kind` in a free-text report."""
    if kind == "laterality":
        return [(m.start(), m.end(), lambda old, seed: _cased(old, "left" if old.lower() == "right" else "right"))
                for m in re.finditer(r"\b(?:right|left)\b", text, re.I)]
    if kind == "size":
        def neighbour(old, seed):
            ladder = next(ld for ld in _LADDERS if old.lower() in ld)
            i = ladder.index(old.lower())
            options = [ladder[j] for j in (i - 1, i + 1) if 0 <= j < len(ladder)]
            return _cased(old, options[seed % len(options)])
        return [(m.start(), m.end(), neighbour) for m in re.finditer(r"\b(?:small|moderate|large|mild|severe)\b",
                                                                        text, re.I)]
    if kind == "count":
        return [(m.start(), m.end(), lambda old, seed: _cased(old, [o for o in _NUMBERS if o != old.lower()][seed % 2]))
                for m in re.finditer(r"\b(?:one|two|three)\b", text, re.I)]
    if kind == "measurement":
        def shift(old, seed, unit):
            if unit.lower().startswith("c"):
                return f"{float(old) + 1:g}"
            return str(int(float(old)) + (_SHIFT_MM if float(old) <= _SHIFT_MM or seed % 2 else -_SHIFT_MM))
        return [(m.start(1), m.end(1), lambda old, seed, u=m.group(2): shift(old, seed, u))
                for m in re.finditer(r"\b(\d+(?:\.\d+)?) ?(mm|cm)\b", text, re.I)]
    if kind == "presence":  # "no " deleted; the word after it takes a sentence-opening capital
        return [(m.start(), m.end(), lambda old, seed: _cased(old, old.split(" ", 1)[1]))
                for m in re.finditer(r"\bno [\w-]+", text, re.I)]
    return []


def _vqa_sites(record: Record, vocab: AnswerVocabulary | None = None
               ) -> list[tuple[int, int, Callable[[str, int], str]]]:
    answer = record.target
    if not embedded(record):
        options = [w for a, w in (vocab or AnswerVocabulary({})).of(record) if a != normalize(answer)]
        if not options:
            return []
        return [(0, len(answer), lambda old, seed: options[seed % len(options)])]
    mm = re.fullmatch(r"(\d+) mm", answer)
    if mm:
        return [(0, mm.end(1), lambda old, seed: str(int(old) + _SHIFT_MM))]
    for words in VOCAB.values():
        if answer.lower() in (w.lower() for w in words):
            options = [w for w in words if w.lower() != answer.lower()]
            return [(0, len(answer), lambda old, seed, o=options: _cased(old, o[seed % len(o)]))]
    return []


def injections(record: Record, vocab: AnswerVocabulary | None = None) -> list[Injection]:
    """At most one injected error per type, each site and new word chosen by record id."""
    out = []
    kinds = ("vqa_answer",) if record.task == "vqa" else ERROR_TYPES[:-1]
    for kind in kinds:
        if kind == "vqa_answer":
            sites = _vqa_sites(record, vocab)
        else:
            sites = _sites(record, kind) if embedded(record) else _real_report_sites(record.target, kind)
        if not sites:
            continue
        seed = stable_hash(record.record_id, kind)
        start, end, new_word = sites[seed % len(sites)]
        old = record.target[start:end]
        new = new_word(old, seed // 7)
        out.append(Injection(kind, record.target[:start] + new + record.target[end:], start, old, new))
    return out


def _applied(text: str, verdict: CriticVerdict) -> str | None:
    out = apply_edits(text, verdict.edits, PairLimits())
    return out if isinstance(out, str) else None


def run_suite(critic: Critic, records: Iterable[Record], progress: Callable[[int], None] | None = None,
              vocab: AnswerVocabulary | None = None) -> dict:
    """Counters per row of the table (error types, clean reports, clean VQA); `vocab` gives real VQA
    records their wrong answers."""
    rows: dict[str, Counter] = {k: Counter() for k in (*ERROR_TYPES, "clean_report", "clean_vqa")}
    for n, rec in enumerate(records, 1):
        clean = critic.review(rec, rec.target)
        row = rows["clean_vqa" if rec.task == "vqa" else "clean_report"]
        row["n"] += 1
        row[clean.verdict] += 1
        if clean.verdict == "right":
            row["pair_ok"] += isinstance(build_pair(rec, rec.target, clean, 0), PreferencePair)
            flipped = _applied(rec.target, clean)
            again = critic.review(rec, flipped) if flipped is not None else None
            row["roundtrip"] += bool(again and again.verdict == "wrong" and _applied(flipped, again) == rec.target)
        for inj in injections(rec, vocab):
            v = critic.review(rec, inj.text)
            r = rows[inj.kind]
            r["injected"] += 1
            r["detected"] += v.verdict == "wrong"
            r["abstain"] += v.verdict == "abstain"
            if v.verdict == "wrong":
                r["exact_fix"] += _applied(inj.text, v) == rec.target
                r["pair_ok"] += isinstance(build_pair(rec, inj.text, v, 0), PreferencePair)
        if progress is not None:
            progress(n)
    return rows


def summary(rows: dict[str, Counter]) -> dict:
    """The headline figures: injected errors, detection / exact-fix rates, false positives on clean."""
    inj = [rows[k] for k in ERROR_TYPES]
    injected = sum(r["injected"] for r in inj)
    clean = rows["clean_report"] + rows["clean_vqa"]

    def rate(a: float, b: float) -> float:
        return round(a / b, 4) if b else 0.0

    return {
        "injected": injected,
        "detected_rate": rate(sum(r["detected"] for r in inj), injected),
        "exact_fix_rate": rate(sum(r["exact_fix"] for r in inj), injected),
        "false_positive_rate": rate(clean["wrong"], clean["n"]),
        "clean": clean["n"],
        "clean_abstain_rate": rate(clean["abstain"], clean["n"]),
        "counterfactual_roundtrip_rate": rate(clean["roundtrip"], clean["right"]),
        "pair_accept_rate": rate(sum(r["pair_ok"] for r in inj) + clean["pair_ok"],
                                 sum(r["detected"] for r in inj) + clean["right"]),
    }


def format_table(rows: dict[str, Counter]) -> str:
    """One line per error type and per clean set."""
    lines = [f"{'row':<14}{'injected':>9}{'detected':>9}{'exact':>7}{'abstain':>8}{'pair_ok':>8}",]
    for k in ERROR_TYPES:
        r = rows[k]
        lines.append(f"{k:<14}{r['injected']:>9}{r['detected']:>9}{r['exact_fix']:>7}{r['abstain']:>8}{r['pair_ok']:>8}")
    lines.append(f"{'clean':<14}{'n':>9}{'right':>9}{'wrong':>7}{'abstain':>8}{'pair_ok':>8}{'roundtrip':>10}")
    for k in ("clean_report", "clean_vqa"):
        r = rows[k]
        lines.append(f"{k:<14}{r['n']:>9}{r['right']:>9}{r['wrong']:>7}{r['abstain']:>8}{r['pair_ok']:>8}"
                     f"{r['roundtrip']:>10}")
    return "\n".join(lines)
