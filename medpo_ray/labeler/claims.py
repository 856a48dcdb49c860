"""What the labeler returns: claims about findings, each word of which carries its character span."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["present", "absent", "uncertain"]


@dataclass(frozen=True)
class Span:
    """Characters [start, end) of the labelled text, and the text they hold."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Attr:
    """One attribute of a claim (side, severity, count, measurement): its normalized value and its words.

    Measurements hold millimetres in `value`, the number's characters in `span` and the unit as
    written in `unit` ("mm", "cm", ...), so an edit can rewrite the number in the report's own unit.
    """

    value: str | int | float
    span: Span
    unit: str = ""


@dataclass(frozen=True)
class Claim:
    """One statement about one finding in one sentence.

    `cue` is the negation or uncertainty cue that set `status` (None for a plain positive mention, or
    for a "normal ..." mention whose negation is its own wording). `ambiguous` names the attributes
    written more than once in the claim's clause ("right ... or the left ...", "two is two"); a
    consumer that needs such an attribute must not guess which word holds it.
    """

    finding: str
    status: Status
    mention: Span
    sentence: Span
    cue: Span | None = None
    side: Attr | None = None
    severity: Attr | None = None
    count: Attr | None = None
    measurement: Attr | None = None
    ambiguous: tuple[str, ...] = ()

    def attr(self, name: str) -> Attr | None:
        """The attribute called `name` (side | severity | count | measurement)."""
        return getattr(self, name)
