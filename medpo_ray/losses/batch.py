"""Batch builder: the four (image, response) pairs of each example concatenated into one padded batch.

Rows are pair-major, like TRL's [chosen; rejected] concatenation: first the (x, y+) row of every
example, then (x, y-), then (x~, y-), then (x~, y+), only for the pairs the loss needs
(`needed_pairs`), so the `dpo` preset costs 2 rows per example and `fire_mpo` 4, and one forward of
the policy and one of the reference cover them all.

Images (for a VLM forward): row r uses image `row_image[r]` of the list
    [clean image of example 0, ..., clean image of example B-1, corrupted image of example 0, ...]
i.e. index b for x and B + b for x~. The learner builds pixel_values for the rows from that list
(`[images[i] for i in row_image]`); prompt token ids are the same for x and x~ unless an example
gives `corrupt_prompt_ids` (a text-only model stands in for the image with a different prompt).

Masks are indexed by token position, which is also the label position used by the loss:
completion_mask is 1 on y and its EOS; edit_mask is 1 on tokens overlapping an edited character span
(through the tokenizer's offset mapping) and never on EOS.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import torch

from medpo_ray.data.record import BadRecord
from medpo_ray.editing.token_masks import Span, token_mask_for_text
from medpo_ray.errors import MedpoError
from medpo_ray.losses.checks import LossInputError

PAIRS = ("(x,y+)", "(x,y-)", "(x~,y-)", "(x~,y+)")
X_POS, X_NEG, XC_NEG, XC_POS = range(4)
ALL_PAIRS = (X_POS, X_NEG, XC_NEG, XC_POS)
_SOURCE = "loss batch"


@dataclass(frozen=True)
class PairExample:
    """One minimal-edit preference pair: prompt token ids, y+ / y- texts and their edited character spans."""

    record_id: str
    prompt_ids: Sequence[int]
    chosen: str
    rejected: str
    chosen_spans: Sequence[Span] = ()
    rejected_spans: Sequence[Span] = ()
    has_corrupt: bool = True  # h: a corrupted image x~ exists for this example
    corrupt_prompt_ids: Sequence[int] | None = None  # prompt under x~ when it differs from prompt_ids


@dataclass
class PreferenceBatch:
    """Padded rows [R, T] plus the routing from (pair, example) to row and from row to image."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor
    edit_mask: torch.Tensor
    row_pair: torch.Tensor  # [R] index into PAIRS
    row_example: torch.Tensor  # [R] index into record_ids
    row_image: torch.Tensor  # [R] b for the clean image of example b, B + b for its corrupted image
    pair_rows: torch.Tensor  # [4, B] row of (pair, example), -1 where not built
    has_corrupt: torch.Tensor  # [B] bool, h
    record_ids: list[str]
    bad: list[BadRecord]  # examples left out of the batch, with the reason

    @property
    def num_examples(self) -> int:
        """B, the number of examples (pairs) in the batch."""
        return len(self.record_ids)

    def to(self, device: torch.device | str) -> PreferenceBatch:
        """The same batch with every tensor on `device`."""
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()}
        return PreferenceBatch(**moved)


def needed_pairs(cfg) -> tuple[int, ...]:
    """The pairs a LossConfig reads: (x,y+), (x,y-) always; x~ rows only for the visual term it uses."""
    if cfg.gamma == 0:
        return (X_POS, X_NEG)
    return {"reverse": ALL_PAIRS, "conditional": (X_POS, X_NEG, XC_POS), "v2": (X_POS, X_NEG, XC_NEG)}[cfg.vis_mode]


def chat_prompt_ids(tokenizer, prompt: str, image_tokens: int = 1, image_token: str = "<|image_pad|>") -> list[int]:
    """Prompt ids from the chat template (an image then the text, generation prompt added).

    The template renders one image placeholder (`image_token`: the processor's, `<|image_pad|>` for the
    Qwen-VL families, `<image>` for LLaVA); the processor expands it to the number of vision tokens of the
    image, which `image_tokens` reproduces here (0: a text-only prompt).
    """
    content = ([{"type": "image"}] if image_tokens > 0 else []) + [{"type": "text", "text": prompt}]
    text = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if image_tokens > 0:
        pad = tokenizer.convert_tokens_to_ids(image_token)
        if ids.count(pad) != 1:
            raise LossInputError(f"chat template rendered {ids.count(pad)} {image_token!r} tokens, expected 1")
        i = ids.index(pad)
        ids[i:i + 1] = [pad] * image_tokens
    return ids


def _completion(tokenizer, text: str, spans: Sequence[Span], field: str) -> tuple[list[int], list[int]]:
    if not isinstance(text, str) or not text.strip():
        raise LossInputError(f"{field}: empty response" if isinstance(text, str) else
                             f"{field}: expected a string, got {type(text).__name__}")
    try:
        ids, mask = token_mask_for_text(tokenizer, text, spans)
    except MedpoError as e:
        raise LossInputError(f"{field}_spans: {e}") from None
    except (TypeError, ValueError):
        raise LossInputError(f"{field}_spans: expected (start, end) character offsets, got {spans!r}") from None
    # EOS is appended by id, so it can never fall inside an edited span.
    return ids + [tokenizer.eos_token_id], mask + [0]


def _check_prompt(field: str, ids: Sequence[int], vocab: int) -> None:
    if len(ids) == 0:
        raise LossInputError(f"{field}: empty prompt")
    # An id outside the vocabulary would only fail later, inside the model's embedding lookup.
    bad = [i for i in ids if not isinstance(i, Integral) or not 0 <= i < vocab]
    if bad:
        raise LossInputError(f"{field}: token id {bad[0]!r} is not in the tokenizer's vocabulary of {vocab}")


def _example_rows(ex: PairExample, tokenizer, pairs: Sequence[int]) -> dict[int, tuple[list, list, int]]:
    """pair -> (prompt + completion ids, edit mask over the same positions, prompt length)."""
    _check_prompt("prompt_ids", ex.prompt_ids, len(tokenizer))
    if ex.has_corrupt and ex.corrupt_prompt_ids is not None:
        _check_prompt("corrupt_prompt_ids", ex.corrupt_prompt_ids, len(tokenizer))
    pos = _completion(tokenizer, ex.chosen, ex.chosen_spans, "chosen")
    neg = _completion(tokenizer, ex.rejected, ex.rejected_spans, "rejected")
    corrupt = list(ex.corrupt_prompt_ids if ex.corrupt_prompt_ids is not None else ex.prompt_ids)
    rows = {}
    for p in pairs:
        if p in (XC_NEG, XC_POS) and not ex.has_corrupt:
            continue
        prompt = list(ex.prompt_ids) if p in (X_POS, X_NEG) else corrupt
        ids, mask = pos if p in (X_POS, XC_POS) else neg
        rows[p] = (prompt + ids, [0] * len(prompt) + mask, len(prompt))
    return rows


def build_preference_batch(examples: Sequence[PairExample], tokenizer, pairs: Sequence[int] = ALL_PAIRS,
                           max_length: int | None = None, pad_to_multiple_of: int = 1) -> PreferenceBatch:
    """Tokenize and right-pad the pairs of `examples` into one batch; bad examples go to `batch.bad`."""
    if tokenizer.eos_token_id is None:
        raise LossInputError("tokenizer has no eos_token; every response must end with EOS")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pairs = sorted(set(pairs))
    if not {X_POS, X_NEG} <= set(pairs):
        raise LossInputError(f"pairs {pairs}: (x,y+) and (x,y-) are always needed")
    good, bad = [], []
    for ex in examples:
        try:
            rows = _example_rows(ex, tokenizer, pairs)
            longest = max(len(ids) for ids, _, _ in rows.values())
            if max_length is not None and longest > max_length:
                raise LossInputError(f"prompt + response: {longest} tokens exceed max_length {max_length}")
        except LossInputError as e:
            field, _, reason = str(e).partition(": ")
            bad.append(BadRecord(ex.record_id, field, reason, _SOURCE))
            continue
        good.append((ex, rows))
    if not good:
        reasons = "; ".join(str(b) for b in bad) or "no examples given"
        raise LossInputError(f"no usable example in the batch: {reasons}")

    B = len(good)
    flat = [(p, b, rows[p]) for p in pairs for b, (_, rows) in enumerate(good) if p in rows]
    T = max(len(ids) for _, _, (ids, _, _) in flat)
    T = -(-T // pad_to_multiple_of) * pad_to_multiple_of
    R = len(flat)
    input_ids = torch.full((R, T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((R, T), dtype=torch.long)
    completion_mask = torch.zeros((R, T), dtype=torch.long)
    edit_mask = torch.zeros((R, T), dtype=torch.long)
    pair_rows = torch.full((4, B), -1, dtype=torch.long)
    for r, (p, b, (ids, mask, prompt_len)) in enumerate(flat):
        n = len(ids)
        input_ids[r, :n] = torch.tensor(ids)
        attention_mask[r, :n] = 1
        completion_mask[r, prompt_len:n] = 1
        edit_mask[r, :n] = torch.tensor(mask)
        pair_rows[p, b] = r
    row_pair = torch.tensor([p for p, _, _ in flat], dtype=torch.long)
    row_example = torch.tensor([b for _, b, _ in flat], dtype=torch.long)
    corrupted = (row_pair == XC_NEG) | (row_pair == XC_POS)
    return PreferenceBatch(
        input_ids=input_ids, attention_mask=attention_mask, completion_mask=completion_mask,
        edit_mask=edit_mask, row_pair=row_pair, row_example=row_example,
        row_image=row_example + B * corrupted.long(), pair_rows=pair_rows,
        has_corrupt=torch.tensor([ex.has_corrupt for ex, _ in good], dtype=torch.bool),
        record_ids=[ex.record_id for ex, _ in good], bad=bad)
