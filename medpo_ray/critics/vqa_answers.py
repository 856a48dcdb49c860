"""The reference critic on real VQA answers (VQA-RAD, SLAKE, PathVQA, ...): normalised matching against
the ground-truth answer, the answer span as the only edit, counterfactuals from the dataset's answers.

Matching: case, punctuation, articles, yes/no synonyms ("yeah", "correct", "negative"), number words
("two" = "2"), laterality phrasings ("right-sided", "on the left", "both sides" = "bilateral") and the
order of a listed answer ("liver, kidney" = "kidney and liver") do not change an answer.

Where the answer is in y0: a closed yes/no answer is the yes/no word y0 opens with; any other answer is
the one stretch of y0 (up to 6 words) that normalises to an answer the dataset gives to questions of
this type. The edit replaces that stretch and nothing else. Counterfactuals (branch B) replace it by
another of the `choices` most frequent answers of the question type in the training split; since every
answer of a type is offered for every other, each swap has its mirror and the keep rates of
critics/balance.py use both directions equally. The critic abstains, naming why, when y0 holds no
readable answer, more than one, or an open answer outside the dataset's vocabulary (a synonym the rules
do not know is not a wrong answer).
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from medpo_ray.critics.answer import abstain
from medpo_ray.critics.base import CriticVerdict, Edit, embedded
from medpo_ray.data.record import Record

MAX_ANSWER_WORDS = 6
_YES = {"yes", "y", "yeah", "yep", "yup", "true", "correct", "affirmative", "positive"}
_NO = {"no", "n", "nope", "false", "incorrect", "negative"}
_ARTICLES = {"a", "an", "the"}
_NUMBERS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}
_SIDE_FILLER = {"side", "sided", "sides", "on", "of", "in", "at"}
_SIDE_WORDS = {"right": "right", "left": "left", "both": "bilateral", "bilateral": "bilateral",
               "bilaterally": "bilateral"}
_WORD = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*")
_SPAN_WORD = re.compile(r"[\w'.-]+")
_LIST_SPLIT = re.compile(r"\s*(?:,|;|\band\b|/)\s*")


def _words(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).lower().replace("-", " ")
    return [_NUMBERS.get(w, w) for w in _WORD.findall(text) if w not in _ARTICLES]


def _one(text: str) -> str:
    words = _words(text)
    if len(words) == 1 and words[0] in _YES:
        return "yes"
    if len(words) == 1 and words[0] in _NO:
        return "no"
    core = [w for w in words if w not in _SIDE_FILLER]
    if core and all(w in _SIDE_WORDS for w in core):
        sides = {_SIDE_WORDS[w] for w in core}
        return "bilateral" if "bilateral" in sides or sides == {"right", "left"} else sides.pop()
    return " ".join(words)


def normalize(text: str) -> str:
    """The comparable form of an answer; "" when nothing answer-like is left."""
    items = [_one(p) for p in _LIST_SPLIT.split(unicodedata.normalize("NFKC", text).strip().rstrip(".").lower())]
    items = [i for i in items if i]
    if len(items) > 1 and not any(i in ("yes", "no") for i in items):
        # "left and right" is one side, "liver, kidney" a list whose order is not part of the answer.
        side = _one(" ".join(items))
        return side if side == "bilateral" else ", ".join(sorted(set(items)))
    return items[0] if items else ""


def type_key(record: Record) -> str:
    """The answer vocabulary a record's answer belongs to: yes/no, else its question type and kind."""
    if normalize(record.target) in ("yes", "no"):
        return "yesno"
    qtype = re.sub(r"[^a-z0-9_]+", "_", (record.question_type or "any").lower()).strip("_") or "any"
    return f"{qtype}-{record.answer_type or 'open'}"


@dataclass(frozen=True)
class AnswerVocabulary:
    """Per question type, the training split's most frequent answers (normalised -> as first written)."""

    answers: Mapping[str, tuple[tuple[str, str], ...]]

    @classmethod
    def from_records(cls, records: Iterable[Record], choices: int = 16) -> AnswerVocabulary:
        """The `choices` most frequent answers of each question type among VQA records (ties by text)."""
        counts: dict[str, Counter] = defaultdict(Counter)
        written: dict[str, str] = {}
        for r in records:
            if r.task != "vqa" or embedded(r):
                continue
            norm = normalize(r.target)
            if not norm or ">" in norm or len(norm.split()) > MAX_ANSWER_WORDS:
                continue
            counts[type_key(r)][norm] += 1
            written.setdefault(norm, r.target.strip().rstrip("."))
        return cls({k: tuple((a, written[a]) for a, _ in sorted(c.items(), key=lambda t: (-t[1], t[0]))[:choices])
                    for k, c in sorted(counts.items())})

    def of(self, record: Record) -> tuple[tuple[str, str], ...]:
        """(normalised, written) answers of the record's question type; yes/no always has both."""
        key = type_key(record)
        return (("yes", "yes"), ("no", "no")) if key == "yesno" else tuple(self.answers.get(key, ()))

    def to_json(self) -> dict:
        """A JSON-ready copy (written to the run directory)."""
        return {k: [list(x) for x in v] for k, v in self.answers.items()}


def _span_candidates(y0: str):
    # Every stretch of up to MAX_ANSWER_WORDS words of y0: (start, end, normalised).
    words = list(_SPAN_WORD.finditer(y0))
    for i in range(len(words)):
        if words[i].group().lower() in _ARTICLES:
            continue  # "the kidney" -> "the liver": the article is context, not part of the answer
        for j in range(i, min(i + MAX_ANSWER_WORDS, len(words))):
            start, end = words[i].start(), words[j].end()
            while end > start and y0[end - 1] in ".,;:":
                end -= 1
            yield start, end, normalize(y0[start:end])


def answer_span(record: Record, y0: str, vocab: AnswerVocabulary) -> tuple[int, int, str] | str:
    """(start, end, normalised answer) of the answer in y0, or why it cannot be found."""
    whole = normalize(y0)
    if type_key(record) == "yesno":
        m = re.match(r"\s*([\w']+)", y0)
        first = normalize(m.group(1)) if m else ""
        if {"yes", "no"} <= set(re.findall(r"[a-z]+", y0.lower())):
            return f"both yes and no in {y0[:80]!r}"
        if first in ("yes", "no"):
            return m.start(1), m.end(1), first
        return f"a yes/no question, and the answer does not open with yes or no: {y0[:80]!r}"
    known = {a for a, _ in vocab.of(record)} | {normalize(record.target)}
    if whole in known:
        text = y0.strip().rstrip(".")
        start = y0.index(text)
        return start, start + len(text), whole
    hits = [(s, e, n) for s, e, n in _span_candidates(y0) if n in known]
    # The longest stretch wins where stretches overlap ("right lung" over "lung" when both are answers).
    hits.sort(key=lambda h: (-(h[1] - h[0]), h[0]))
    chosen: list[tuple[int, int, str]] = []
    for h in hits:
        if all(h[1] <= c[0] or h[0] >= c[1] for c in chosen):
            chosen.append(h)
    distinct = {n for _, _, n in chosen}
    if len(distinct) == 1:
        return chosen[0]
    if not chosen:
        return f"no answer of type {type_key(record)} in {y0[:80]!r} (an answer outside the dataset's vocabulary)"
    return f"{len(distinct)} different answers in {y0[:80]!r}"


def _cased(old: str, new: str) -> str:
    if new[:1].isalpha() and old[:1].isupper() and new[:1].islower():
        return new[:1].upper() + new[1:]
    if old[:1].islower() and new[:1].isupper() and not new.isupper():
        return new[:1].lower() + new[1:]
    return new


def counterfactuals(record: Record, y0: str, vocab: AnswerVocabulary,
                    found: tuple[int, int, str] | str | None = None) -> list[tuple[str, Edit]]:
    """Each other frequent answer of the question type in place of y0's (agreeing) answer, with its
    balance key "vqa-<type>:<old>><new>" (`found`: y0's answer_span when the caller has it)."""
    found = answer_span(record, y0, vocab) if found is None else found
    if isinstance(found, str):
        return []
    start, end, norm = found
    key = type_key(record)
    if norm not in {a for a, _ in vocab.of(record)}:
        return []  # a rare answer has no mirror among the frequent ones: no balanced swap exists
    old = y0[start:end]
    return [(f"vqa-{key}:{norm}>{a}", Edit(old, _cased(old, written), start, "other"))
            for a, written in vocab.of(record) if a != norm]


def review(record: Record, y0: str, vocab: AnswerVocabulary, critic) -> CriticVerdict:
    """Wrong with the answer span replaced by the ground truth, right with a balanced counterfactual
    (`critic.counterfactual`), or an abstention naming why."""
    target = normalize(record.target)
    if not target:
        return abstain("no_findings", f"record {record.record_id!r} has an empty ground-truth answer", critic.name)
    found = answer_span(record, y0, vocab)
    if isinstance(found, str):
        return abstain("unreadable", found, critic.name)
    start, end, norm = found
    if norm == target:
        return critic.counterfactual(record, counterfactuals(record, y0, vocab, found))
    old = y0[start:end]
    written = record.target.strip().rstrip(".")
    return CriticVerdict("wrong", (Edit(old, _cased(old, written), start, "other"),), critic.name,
                         f"answer {norm!r}, expected {target!r}")
