"""A learner's input: one preference pair with its images, and its collation into model inputs.

Each rank collates its own share of the batch (tokenizer and image processor are local), so only
the small `TrainExample`s travel between processes.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from medpo_ray.config import LossConfig
from medpo_ray.data.record import BadRecord
from medpo_ray.editing.token_masks import Span
from medpo_ray.errors import MedpoError
from medpo_ray.losses import (
    PairExample,
    PreferenceBatch,
    build_preference_batch,
    chat_prompt_ids,
    needed_pairs,
)
from medpo_ray.models.inputs import image_token_count, open_image

_SOURCE = "learner"


@dataclass(frozen=True)
class TrainExample:
    """A minimal-edit pair ready to train on: the prompt and clean image x, y+ / y- with their edited
    character spans, and the lesion-corrupted image x~ (None: no x~, the visual term is off for it)."""

    example_id: str
    prompt: str
    image: bytes
    chosen: str
    rejected: str
    chosen_spans: tuple[Span, ...] = ()
    rejected_spans: tuple[Span, ...] = ()
    corrupt_image: bytes | None = None

    @classmethod
    def from_pair(cls, pair, record, corrupt_image: bytes | None) -> TrainExample:
        """From an editing.pairs.PreferencePair, the Record it was built for and its x~ bytes."""
        return cls(example_id=pair.record_id, prompt=record.prompt, image=record.image, chosen=pair.y_plus,
                   rejected=pair.y_minus, chosen_spans=tuple(pair.spans_plus),
                   rejected_spans=tuple(pair.spans_minus), corrupt_image=corrupt_image)


@dataclass
class Collated:
    """Model inputs for the batch rows, the loss batch, and the examples that were left out."""

    inputs: dict
    batch: PreferenceBatch | None
    bad: list[BadRecord]


class _BadField(MedpoError):
    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field = field


def _checked(field: str, fn, *args):
    try:
        return fn(*args)
    except MedpoError as e:
        raise _BadField(field, str(e)) from None


def _pair_example(ex: TrainExample, processor, vision_ids: set[int]) -> tuple[PairExample, list]:
    """The loss library's PairExample and its [x, x~] images; raises _BadField naming what is wrong."""
    tok = processor.tokenizer
    clean = _checked("image", open_image, ex.image, ex.example_id)
    n_clean = _checked("image", image_token_count, processor, clean, ex.example_id)
    prompt_ids = _checked("prompt", chat_prompt_ids, tok, ex.prompt, n_clean)
    corrupt, corrupt_ids = None, None
    if ex.corrupt_image is not None:
        corrupt = _checked("corrupt_image", open_image, ex.corrupt_image, ex.example_id)
        n_corrupt = _checked("corrupt_image", image_token_count, processor, corrupt, ex.example_id)
        if n_corrupt != n_clean:
            corrupt_ids = _checked("prompt", chat_prompt_ids, tok, ex.prompt, n_corrupt)
    for field, text in (("chosen", ex.chosen), ("rejected", ex.rejected)):
        # A response that spells a vision token would be read as an image slot by the model.
        ids = tok(text, add_special_tokens=False)["input_ids"] if isinstance(text, str) else []
        if vision_ids & set(ids):
            raise _BadField(field, "the response contains an image/vision special token")
    pair = PairExample(example_id=ex.example_id, prompt_ids=prompt_ids, chosen=ex.chosen, rejected=ex.rejected,
                       chosen_spans=tuple(ex.chosen_spans), rejected_spans=tuple(ex.rejected_spans),
                       has_corrupt=corrupt is not None, corrupt_prompt_ids=corrupt_ids)
    return pair, [clean, corrupt]


def collate(examples: Sequence[TrainExample], processor, loss: LossConfig, vision_ids: set[int],
            image_token_id: int, max_length: int | None = None) -> Collated:
    """Model inputs (input_ids, attention_mask, mm_token_type_ids, pixel_values, image_grid_thw) of every row
    the loss needs, and its PreferenceBatch; examples with bad input are listed in `bad`, not raised."""

    pairs, images, bad = [], [], []
    for ex in examples:
        try:
            pair, imgs = _pair_example(ex, processor, vision_ids)
        except _BadField as e:
            bad.append(BadRecord(ex.example_id, e.field, str(e), _SOURCE))
            continue
        pairs.append(pair)
        images.append(imgs)
    if not pairs:
        return Collated({}, None, bad)
    try:
        batch = build_preference_batch(pairs, processor.tokenizer, needed_pairs(loss), max_length=max_length)
    except MedpoError as e:  # every example refused: the reasons are in the message
        return Collated({}, None, bad + [BadRecord(",".join(p.example_id for p in pairs), "batch", str(e), _SOURCE)])
    keep = {p.example_id: imgs for p, imgs in zip(pairs, images, strict=True)}
    ordered = [keep[i] for i in batch.example_ids]
    # Row r shows image row_image[r] of [x_0 .. x_B-1, x~_0 .. x~_B-1] (losses/batch.py).
    pool = [imgs[0] for imgs in ordered] + [imgs[1] for imgs in ordered]
    vis = processor.image_processor(images=[pool[i] for i in batch.row_image.tolist()], return_tensors="pt")
    prompt = batch.attention_mask.bool() & ~batch.completion_mask.bool()
    inputs = {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
        "mm_token_type_ids": ((batch.input_ids == image_token_id) & prompt).long(),
        "pixel_values": vis["pixel_values"],
        "image_grid_thw": vis["image_grid_thw"],
    }
    return Collated(inputs, batch, bad + list(batch.bad))
