"""Read a report in the embedded grammar (medpo_ray.data.reports) into statements the reference
critic can check word by word: one per side sentence of FINDINGS, one per clause of IMPRESSION.

The labeler finds the claims (noun mention, negation, side, size, count, measurement, with spans);
this module adds what the grammar fixes on top of them: the two sections, the item list after ":"
in a side sentence ("12 mm moderate and 7 mm small"), and a closed vocabulary. Anything outside it
(an unknown word, another finding, a sentence without a claim, a conflicting attribute) makes the
whole text unreadable: the critic abstains rather than guess.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from medpo_ray.labeler import Attr, Claim, Span, attributes, label, sentences

_FUNCTION_WORDS = frozenset(
    "findings impression there is are a an no in the seen measures identified mm sided and zero one two "
    "three small moderate large right left".split())
_WORD = re.compile(r"[A-Za-z]+")
_SECTION = re.compile(r"\b(FINDINGS|IMPRESSION):")


class Unreadable(Exception):
    """The text is not in the grammar; the message says where."""


@dataclass(frozen=True)
class Item:
    """One listed lesion: its measurement and size words (either may be absent in a short form)."""

    measurement: Attr | None
    size: Attr | None


@dataclass(frozen=True)
class Statement:
    """One checkable statement: a FINDINGS side sentence or an IMPRESSION clause."""

    section: str  # findings | impression
    claim: Claim
    plural: bool  # the noun is written in the plural ("nodules")
    items: tuple[Item, ...]  # findings: every listed lesion; impression singular: its size

    @property
    def present(self) -> bool:
        """The statement asserts lesions (not a negation)."""
        return self.claim.status == "present"

    @property
    def side(self) -> Attr | None:
        """The side word, if any."""
        return self.claim.side

    @property
    def count(self) -> Attr | None:
        """The count word ("a", "one", "two", ...), if any."""
        return self.claim.count

    @property
    def shape_count(self) -> int | None:
        """Lesions the sentence's form implies: 1 when singular, the item count when listed, else None."""
        if not self.plural:
            return 1
        return len(self.items) if self.items else None


def _check_vocabulary(text: str, noun: str, region: str) -> None:
    allowed = _FUNCTION_WORDS | {noun, noun + "s"} | set(region.lower().split())
    for m in _WORD.finditer(text):
        if m.group(0).lower() not in allowed:
            raise Unreadable(f"unknown word {m.group(0)!r} at {m.start()}")


def _sections(text: str) -> int:
    marks = [(m.group(1), m.start()) for m in _SECTION.finditer(text)]
    if [name for name, _ in marks] != ["FINDINGS", "IMPRESSION"] or marks[0][1] != 0:
        raise Unreadable("expected 'FINDINGS: ... IMPRESSION: ...'")
    return marks[1][1]


def _items(text: str, claim: Claim, s: Span) -> tuple[Item, ...]:
    colon = text.find(":", claim.mention.end, s.end)
    if colon < 0:
        return ()
    measures = attributes(text, colon, s.end, "measurement")
    sizes = attributes(text, colon, s.end, "severity")
    if len(measures) != len(sizes) or len(measures) < 2:
        raise Unreadable(f"item list {text[colon:s.end]!r} is not 'D mm size and D mm size'")
    ends = [m.span.start for m in measures[1:]] + [s.end]
    for m, z, nxt in zip(measures, sizes, ends, strict=True):
        if not m.span.end < z.span.start < nxt:
            raise Unreadable(f"item list {text[colon:s.end]!r} is not 'D mm size and D mm size'")
    return tuple(Item(m, z) for m, z in zip(measures, sizes, strict=True))


def _statement(text: str, claim: Claim, section: str, noun: str) -> Statement:
    plural = claim.mention.text.lower() == noun + "s"
    where = f"{section} sentence {claim.sentence.text!r}"
    if claim.status == "uncertain":
        raise Unreadable(f"{where}: uncertain wording")
    if {"side", "count"} & set(claim.ambiguous):
        raise Unreadable(f"{where}: more than one side or count word")
    if claim.side is None and section == "findings":
        raise Unreadable(f"{where}: no side")
    if claim.status == "absent":
        # "No 12 mm moderate nodule in the left lung." (a singular findings sentence whose count word became
        # "No") reads as a negation: it is the presence counterfactual of a right report, which the critic
        # must recognise and undo; counts and plurals stay unreadable.
        if claim.count or plural or (section != "findings" and (claim.measurement or claim.severity)):
            raise Unreadable(f"{where}: a negated finding with attributes")
        return Statement(section, claim, plural, ())
    if claim.side is None:
        raise Unreadable(f"{where}: no side")
    if claim.count is None or not isinstance(claim.count.value, int):
        raise Unreadable(f"{where}: no count word")
    if plural:
        items = _items(text, claim, claim.sentence) if section == "findings" else ()
        if section == "impression" and (claim.severity or claim.measurement):
            raise Unreadable(f"{where}: a size for several lesions")
        return Statement(section, claim, True, items)
    if claim.ambiguous or (section == "impression" and claim.measurement):
        raise Unreadable(f"{where}: conflicting attributes")
    item = Item(claim.measurement, claim.severity)
    return Statement(section, claim, False, (item,) if (item.measurement or item.size) else ())


def read_report(text: str, noun: str, region: str) -> tuple[list[Statement], list[Statement]]:
    """(findings statements, impression statements) of a report in the embedded grammar."""
    _check_vocabulary(text, noun, region)
    impression_at = _sections(text)
    claims = label(text)
    for c in claims:
        if c.finding != noun:
            raise Unreadable(f"claim about {c.finding!r}, not the study's {noun!r}")
    for s in sentences(text):
        n = sum(c.sentence == s for c in claims)
        if n == 0 or (s.start < impression_at and n > 1):
            raise Unreadable(f"sentence {s.text!r} holds {n} claims")
    findings, impression = [], []
    for c in claims:
        section = "findings" if c.mention.start < impression_at else "impression"
        (findings if section == "findings" else impression).append(_statement(text, c, section, noun))
    return findings, impression
