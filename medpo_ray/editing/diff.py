"""Word-level diff with character spans on both sides (SPAN_EDITOR.md step 3a-b).

Texts are split into `\\w+|[^\\w\\s]` tokens with character offsets and aligned with
difflib.SequenceMatcher(autojunk=False). Every changed region yields one span on each side, paired
in order, so that replacing each span of `a` by the paired span of `b` rebuilds `b` exactly:
- a pure insertion or deletion also takes the neighbouring equal word on both sides, so neither side
  has an empty mask (the empty side marks the word next to where the text went or came from);
- whitespace is not a token, so a whitespace-only change between equal words pulls those words into
  a region (and a changed leading/trailing blank extends the first/last span to the text's edge).
"""
from __future__ import annotations

import re
from difflib import SequenceMatcher

from medpo_ray.editing.token_masks import Span

TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[tuple[str, int, int]]:
    """(token, start, end) for every word or punctuation mark; whitespace separates them."""
    return [(m.group(), m.start(), m.end()) for m in TOKEN_RE.finditer(text)]


def _slots(kept: list[tuple[int, int]], na: int, nb: int):
    # Between consecutive kept (equal) token pairs, with virtual pairs before the start and past the end:
    # (index of the kept pair before, or -1; a-token range; b-token range).
    prev = (-1, -1)
    for k, (i, j) in enumerate([*kept, (na, nb)]):
        yield k - 1, (prev[0] + 1, i), (prev[1] + 1, j)
        prev = (i, j)


def word_diff(a: str, b: str) -> tuple[list[Span], list[Span]]:
    """Character spans of the changed words in `a` and in `b`, paired in order (equal lengths)."""
    if a == b:
        return [], []
    ta, tb = tokenize(a), tokenize(b)
    if not ta or not tb:
        # One side has no words at all: the whole texts are the change (possibly an empty span).
        return [(0, len(a))], [(0, len(b))]
    sm = SequenceMatcher(None, [t for t, _, _ in ta], [t for t, _, _ in tb], autojunk=False)
    kept = [(m.a + k, m.b + k) for m in sm.get_matching_blocks() for k in range(m.size)]

    def start(k: int, side: int) -> int:
        # Start of kept pair k's token on one side; the text's end past the last kept pair.
        tokens, text = (ta, a) if side == 0 else (tb, b)
        return tokens[kept[k][side]][1] if 0 <= k < len(kept) else len(text)

    while True:
        drop: set[int] = set()
        to_edge: set[tuple[int, str]] = set()  # (first a-token of a region, "start"|"end")
        for before, (i1, i2), (j1, j2) in _slots(kept, len(ta), len(tb)):
            after = before + 1 if before + 1 < len(kept) else -1
            if (i1 == i2) != (j1 == j2):
                # Pure insertion/deletion: the neighbouring equal word joins the change on both sides.
                drop.add(before if before >= 0 else after)
                continue
            end_a = ta[kept[before][0]][2] if before >= 0 else 0
            end_b = tb[kept[before][1]][2] if before >= 0 else 0
            next_a = ta[i1][1] if i1 < len(ta) else len(a)
            next_b = tb[j1][1] if j1 < len(tb) else len(b)
            if a[end_a:next_a] != b[end_b:next_b]:
                if before >= 0:
                    drop.add(before)
                elif i1 < i2:
                    to_edge.add((i1, "start"))
                else:
                    drop.add(after)
            if i1 < i2:
                if a[ta[i2 - 1][2]:start(after, 0)] != b[tb[j2 - 1][2]:start(after, 1)]:
                    if after >= 0:
                        drop.add(after)
                    else:
                        to_edge.add((i1, "end"))
        if not drop:
            break
        kept = [p for k, p in enumerate(kept) if k not in drop]
    spans_a, spans_b = [], []
    for _, (i1, i2), (j1, j2) in _slots(kept, len(ta), len(tb)):
        if i1 < i2:
            lead, trail = (i1, "start") in to_edge, (i1, "end") in to_edge
            spans_a.append((0 if lead else ta[i1][1], len(a) if trail else ta[i2 - 1][2]))
            spans_b.append((0 if lead else tb[j1][1], len(b) if trail else tb[j2 - 1][2]))
    return spans_a, spans_b

