"""Character spans -> per-token masks through a fast tokenizer's offset mapping.

Masks are stored as character spans on the text and turned into token masks at collate time, so a
record stays valid when the tokenizer changes. A token is in the mask when its character range
overlaps any span. Special tokens (EOS, pad, chat markers) have empty offsets (start == end) and so
are never masked.
"""
from __future__ import annotations

from collections.abc import Sequence

from medpo_ray.errors import MedpoError

Span = tuple[int, int]


class SpanError(MedpoError, ValueError):
    """A character span that does not lie inside its text."""


def spans_to_token_mask(offsets: Sequence[Span], spans: Sequence[Span], text: str | None = None) -> list[int]:
    """1 for each token whose [start, end) overlaps a character span, else 0.

    With `text`, a whitespace-only token that ends where a span starts is in the mask too: tokenizers
    that write " 7" as one token but " 12" as " " + "12" put the space of the longer number in a token of
    its own, which then differs between y+ and y- at the same position although no span covers it.
    Where both sides spell the space alike, the extra token has the same prefix and the same id on both
    and adds exactly 0 to the preference margin.
    """
    spans = sorted((int(a), int(b)) for a, b in spans if b > a)
    starts = {a for a, _ in spans}
    mask = []
    for start, end in offsets:
        hit = end > start and any(a < end and start < b for a, b in spans)
        if not hit and text is not None and end > start and end in starts:
            hit = not text[start:end].strip()
        mask.append(int(hit))
    return mask


def token_mask_for_text(tokenizer, text: str, spans: Sequence[Span]) -> tuple[list[int], list[int]]:
    """Tokenize `text` (no special tokens added) and return (input_ids, token mask of `spans`)."""
    for a, b in spans:
        if not (0 <= a <= b <= len(text)):
            raise SpanError(f"span ({a}, {b}) lies outside the text of length {len(text)}")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), spans_to_token_mask(enc["offset_mapping"], spans, text)
