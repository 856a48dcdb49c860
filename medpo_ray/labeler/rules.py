"""The CheXpert-style rule labeler: mentions, NegEx-style cues with clause scope, attributes.

A sentence ends at . ! ? (not a decimal point) or a newline. Inside it, a scope terminator (";",
"but", "however", ", and", ...) ends a cue's reach. Each mention takes the attribute words of its own
stretch of the clause: words before it back to the previous connector (",", "and", "or", "with"),
words after it up to the next connector, and words inside the mention itself ("heart is mildly
enlarged").
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from medpo_ray.labeler import vocab
from medpo_ray.labeler.claims import Attr, Claim, Span, Status

_FLAGS = re.I


def _alt(patterns) -> str:
    return "|".join(f"(?:{p})" for p in patterns)


def _word(pattern: str) -> re.Pattern:
    return re.compile(rf"(?<![\w-])(?:{pattern})(?![\w-])", _FLAGS)


_SENTENCE_END = re.compile(r"\n|[!?]|(?<!\d)\.|\.(?!\d)")
_TERMINATOR = re.compile(_alt(vocab.TERMINATORS), _FLAGS)
_CONNECTOR = re.compile(r",|(?<!\w)(?:and|or|nor|with|without|plus)(?!\w)", _FLAGS)
_CONJUNCTION = re.compile(r"^,?\s*(?:and|or|nor)$", _FLAGS)
_WORDS = re.compile(r"[\w-]+")
_SIDE = _word(r"(?:right|left) and (?:right|left)|" + _alt(sorted(vocab.SIDES, key=len, reverse=True)))
_SEVERITY = _word(_alt(vocab.SEVERITIES))
_COUNT = _word(_alt(vocab.COUNTS) + r"|(?<![.,])\d+(?!\s*(?:[.,]\d|x\b|×|by\b|" + _alt(vocab.UNIT_MM) + r"))")
_MEASURE = _word(r"(\d+(?:\.\d+)?)(?:\s*(?:x|×|by)\s*\d+(?:\.\d+)?)*\s*(" + _alt(vocab.UNIT_MM) + ")")


@dataclass(frozen=True)
class _Cue:
    start: int
    end: int
    kind: str  # neg | unc | pseudo
    pre: bool
    post: bool


@lru_cache(maxsize=1)
def _mention_patterns() -> tuple[tuple[str, re.Pattern], ...]:
    return tuple((finding, _word(p)) for finding, pats in vocab.MENTIONS.items() for p in pats)


@lru_cache(maxsize=1)
def _cue_patterns() -> tuple[tuple[str, bool, bool, re.Pattern], ...]:
    table = [("pseudo", True, False, p) for p in vocab.PSEUDO_NEG]
    table += [("unc", True, False, p) for p in vocab.UNC_PRE] + [("unc", False, True, p) for p in vocab.UNC_POST]
    table += [("neg", True, False, p) for p in vocab.NEG_PRE] + [("neg", False, True, p) for p in vocab.NEG_POST]
    out = []
    for kind, pre, post, p in table:
        # "?" is a post cue on its own; word boundaries would never match around it.
        out.append((kind, pre, post, re.compile(p) if p == r"\?" else _word(p)))
    return tuple(out)


def sentences(text: str) -> list[Span]:
    """Sentence spans of `text` (leading/trailing blanks excluded, final punctuation included)."""
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        out.append((start, m.end()))
        start = m.end()
    out.append((start, len(text)))
    spans = []
    for a, b in out:
        chunk = text[a:b]
        a2 = a + len(chunk) - len(chunk.lstrip())
        b2 = b - (len(chunk) - len(chunk.rstrip()))
        if b2 > a2 and any(ch.isalnum() for ch in text[a2:b2]):
            spans.append(Span(a2, b2, text[a2:b2]))
    return spans


def _non_overlapping(items: list[tuple[int, int, int, object]]) -> list[tuple[int, int, object]]:
    # items: (start, end, priority, payload); longest first, then earliest, then table order.
    taken: list[tuple[int, int, object]] = []
    for a, b, _, payload in sorted(items, key=lambda t: (-(t[1] - t[0]), t[0], t[2])):
        if all(b <= x or a >= y for x, y, _ in taken):
            taken.append((a, b, payload))
    return sorted(taken, key=lambda t: t[0])


def _mentions(text: str, s: Span) -> list[tuple[int, int, str]]:
    found = []
    for order, (finding, pat) in enumerate(_mention_patterns()):
        for m in pat.finditer(text, s.start, s.end):
            found.append((m.start(), m.end(), order, finding))
    return _non_overlapping(found)


def _cues(text: str, s: Span, mentions) -> list[_Cue]:
    found = []
    for order, (kind, pre, post, pat) in enumerate(_cue_patterns()):
        for m in pat.finditer(text, s.start, s.end):
            if all(m.end() <= a or m.start() >= b for a, b, _ in mentions):
                found.append((m.start(), m.end(), order, (kind, pre, post)))
    merged: dict[tuple[int, int], _Cue] = {}
    for a, b, (kind, pre, post) in _non_overlapping(found):
        merged[(a, b)] = _Cue(a, b, kind, pre, post)
    # The same words may be listed as a pre- and a post-cue ("possible"): they reach both ways.
    for a, b, _, (kind, pre, post) in found:
        c = merged.get((a, b))
        if c is not None and c.kind == kind:
            merged[(a, b)] = _Cue(a, b, kind, c.pre or pre, c.post or post)
    return [c for c in merged.values() if c.kind != "pseudo"]


def _blocked(terminators: list[int], a: int, b: int) -> bool:
    return any(a <= t < b for t in terminators)


def _post_reaches(text: str, mentions, i: int, cue: _Cue) -> bool:
    # The mention right before a post-cue (within four words) gets it, and so does a list joined to
    # that mention by "and"/"or" (then commas): "effusion or pneumothorax is not seen".
    later = [j for j in range(i + 1, len(mentions)) if mentions[j][1] <= cue.start]
    last = later[-1] if later else i
    if len(_WORDS.findall(text[mentions[last][1]:cue.start])) > 4:
        return False
    saw_conjunction = False
    for j in range(last, i, -1):
        gap = _strip_attributes(text[mentions[j - 1][1]:mentions[j][0]]).strip()
        if gap in ("", "/") or _CONJUNCTION.match(gap):
            saw_conjunction = True
        elif not (gap == "," and saw_conjunction):
            return False
    return True


def _strip_attributes(gap: str) -> str:
    for pat in (_SIDE, _SEVERITY, _COUNT, _MEASURE):
        gap = pat.sub(" ", gap)
    return gap


def _status(text: str, mentions, i: int, cues: list[_Cue], terminators: list[int]) -> tuple[Status, Span | None]:
    a, b, _ = mentions[i]
    best: tuple[int, _Cue] | None = None
    for c in cues:
        if c.pre and c.end <= a and not _blocked(terminators, c.end, a):
            dist = a - c.end
        elif c.post and c.start >= b and not _blocked(terminators, b, c.start) and _post_reaches(
                text, mentions, i, c):
            dist = c.start - b
        else:
            continue
        if best is None or dist < best[0]:
            best = (dist, c)
    mention_text = text[a:b]
    if best is not None:
        c = best[1]
        return ("absent" if c.kind == "neg" else "uncertain"), Span(c.start, c.end, text[c.start:c.end])
    if vocab.NORMAL.search(mention_text) or vocab.NOT_IN_MENTION.search(mention_text):
        return "absent", None
    return "present", None


def _window(text: str, mentions, i: int, lo: int, hi: int) -> tuple[int, int]:
    a, b, _ = mentions[i]
    start, end = lo, hi
    if i > 0 and mentions[i - 1][1] > lo:
        prev_end = mentions[i - 1][1]
        m = _CONNECTOR.search(text, prev_end, a)
        start = m.start() if m else prev_end
    if i + 1 < len(mentions) and mentions[i + 1][0] < hi:
        m = _CONNECTOR.search(text, b, mentions[i + 1][0])
        end = m.start() if m else b
    return start, end


_PATTERNS = {"side": _SIDE, "severity": _SEVERITY, "count": _COUNT, "measurement": _MEASURE}


def attributes(text: str, start: int, end: int, name: str) -> list[Attr]:
    """Every `name` attribute (side | severity | count | measurement) in text[start:end], in order."""
    hits = []
    for m in _PATTERNS[name].finditer(text, start, end):
        word = m.group(0)
        if name == "side":
            value = "bilateral" if " and " in word.lower() else vocab.SIDES[word.lower()]
            # "right-sided": the fact is the side word alone, so an edit swaps just that word.
            stem = word.split("-")[0] if word.lower().endswith("-sided") else word
            hits.append(Attr(value, Span(m.start(), m.start() + len(stem), stem)))
        elif name == "severity":
            hits.append(Attr(vocab.SEVERITIES[word.lower()], Span(m.start(), m.end(), word)))
        elif name == "count":
            value = int(word) if word.isdigit() else vocab.COUNTS[word.lower()]
            hits.append(Attr(value, Span(m.start(), m.end(), word)))
        else:
            number, unit = m.group(1), m.group(2)
            mm = round(float(number) * vocab.UNIT_MM[unit.lower()], 3)
            hits.append(Attr(mm, Span(m.start(1), m.end(1), number), unit))
    return hits


def _nearest(text: str, lo: int, hi: int, a: int, b: int, name: str) -> tuple[Attr | None, bool]:
    hits = attributes(text, lo, hi, name)
    if not hits:
        return None, False
    nearest = min(hits, key=lambda h: 0 if a <= h.span.start < b else min(abs(h.span.end - a), abs(h.span.start - b)))
    # Two words for one attribute, even equal ones, leave an editor guessing which one is the fact.
    return nearest, len(hits) > 1


def _claims_in_sentence(text: str, s: Span) -> list[Claim]:
    mentions = _mentions(text, s)
    if not mentions:
        return []
    cues = _cues(text, s, mentions)
    terminators = [m.start() for m in _TERMINATOR.finditer(text, s.start, s.end)
                   if not any(c.start <= m.start() < c.end for c in cues)]
    bounds = [s.start, *terminators, s.end]
    claims = []
    for i, (a, b, finding) in enumerate(mentions):
        lo = max(t for t in bounds if t <= a)
        hi = min(t for t in bounds if t >= b)
        w0, w1 = _window(text, mentions, i, lo, hi)
        status, cue = _status(text, mentions, i, cues, terminators)
        attrs, ambiguous = {}, []
        for name in _PATTERNS:
            attrs[name], conflict = _nearest(text, w0, w1, a, b, name)
            if conflict:
                ambiguous.append(name)
        claims.append(Claim(finding, status, Span(a, b, text[a:b]), s, cue, ambiguous=tuple(ambiguous),
                            **attrs))
    return claims


def label(text: str) -> list[Claim]:
    """Every claim the rules find in `text`, in reading order."""
    out: list[Claim] = []
    for s in sentences(text):
        out.extend(_claims_in_sentence(text, s))
    return out
