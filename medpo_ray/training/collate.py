"""A learner's input, the pipeline's PreferencePair (with its prompt, x and x~), collated into model inputs.

Each rank collates its own share of the batch (tokenizer and image processor are local), so only the
pairs travel between processes. The loss library's PairExample is the tokenized view built here.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from medpo_ray.config import LossConfig
from medpo_ray.data.record import BadRecord
from medpo_ray.editing.pairs import PreferencePair
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


def _pair_example(ex: PreferencePair, processor, vision_ids: set[int]) -> tuple[PairExample, list]:
    """The loss library's PairExample and its [x, x~] images; raises _BadField naming what is wrong."""
    tok = processor.tokenizer
    clean = _checked("image", open_image, ex.image, ex.record_id)
    n_clean = _checked("image", image_token_count, processor, clean, ex.record_id)
    prompt_ids = _checked("prompt", chat_prompt_ids, tok, ex.prompt, n_clean, processor.image_token)
    corrupt, corrupt_ids = None, None
    if ex.corrupt_image is not None:
        corrupt = _checked("corrupt_image", open_image, ex.corrupt_image, ex.record_id)
        n_corrupt = _checked("corrupt_image", image_token_count, processor, corrupt, ex.record_id)
        if n_corrupt != n_clean:
            corrupt_ids = _checked("prompt", chat_prompt_ids, tok, ex.prompt, n_corrupt, processor.image_token)
    for field, text in (("y_plus", ex.y_plus), ("y_minus", ex.y_minus)):
        # A response that spells a vision token would be read as an image slot by the model.
        ids = tok(text, add_special_tokens=False)["input_ids"] if isinstance(text, str) else []
        if vision_ids & set(ids):
            raise _BadField(field, "the response contains an image/vision special token")
    pair = PairExample(record_id=ex.record_id, prompt_ids=prompt_ids, chosen=ex.y_plus, rejected=ex.y_minus,
                       chosen_spans=tuple(ex.spans_plus), rejected_spans=tuple(ex.spans_minus),
                       has_corrupt=corrupt is not None, corrupt_prompt_ids=corrupt_ids)
    return pair, [clean, corrupt]


def collate(examples: Sequence[PreferencePair], processor, loss: LossConfig, vision_ids: set[int],
            image_token_id: int, max_length: int | None = None) -> Collated:
    """Model inputs of every row the loss needs (input_ids, attention_mask, the image processor's tensors:
    pixel_values and, for Qwen-VL families, image_grid_thw; mm_token_type_ids where the processor declares
    it), and its PreferenceBatch; examples with bad input are listed in `bad`, not raised."""

    pairs, images, bad = [], [], []
    for ex in examples:
        try:
            pair, imgs = _pair_example(ex, processor, vision_ids)
        except _BadField as e:
            bad.append(BadRecord(ex.record_id, e.field, str(e), _SOURCE))
            continue
        pairs.append(pair)
        images.append(imgs)
    if not pairs:
        return Collated({}, None, bad)
    try:
        batch = build_preference_batch(pairs, processor.tokenizer, needed_pairs(loss), max_length=max_length)
    except MedpoError as e:  # every example refused: the reasons are in the message
        return Collated({}, None, bad + [BadRecord(",".join(p.record_id for p in pairs), "batch", str(e), _SOURCE)])
    keep = {p.record_id: imgs for p, imgs in zip(pairs, images, strict=True)}
    ordered = [keep[i] for i in batch.record_ids]
    # Row r shows image row_image[r] of [x_0 .. x_B-1, x~_0 .. x~_B-1] (losses/batch.py).
    pool = [imgs[0] for imgs in ordered] + [imgs[1] for imgs in ordered]
    vis = processor.image_processor(images=[pool[i] for i in batch.row_image.tolist()], return_tensors="pt")
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, **vis}
    if "mm_token_type_ids" in processor.model_input_names:  # Qwen-VL: 3-D rotary positions of image tokens
        prompt = batch.attention_mask.bool() & ~batch.completion_mask.bool()
        inputs["mm_token_type_ids"] = ((batch.input_ids == image_token_id) & prompt).long()
    return Collated(inputs, batch, bad + list(batch.bad))


class Collator:
    """`collate` for one model directory: its processor, vision tokens and image token, loaded once. The
    learner collates its steps with it; the corruption stage runs `check`, the same code, on each pair as
    it is made, so a pair the learner would leave out is replaced before its step, not lost from it."""

    def __init__(self, model_dir, loss: LossConfig, max_length: int | None = None):
        from medpo_ray.models.loading import load_processor, vision_token_ids

        self.processor = load_processor(model_dir)
        tok = self.processor.tokenizer
        tok.chat_template = tok.chat_template or self.processor.chat_template
        self.vision_ids = vision_token_ids(model_dir)
        self.image_token_id = int(tok.convert_tokens_to_ids(self.processor.image_token))
        self.loss, self.max_length = loss, max_length

    def __call__(self, examples: Sequence[PreferencePair]) -> Collated:
        return collate(examples, self.processor, self.loss, self.vision_ids, self.image_token_id, self.max_length)

    def check(self, examples: Sequence[PreferencePair]) -> dict[str, str]:
        """{record id: "field: reason"} of the examples `collate` would leave out (no model forward)."""
        refused: dict[str, str] = {}
        for ex in examples:  # one at a time: a refused batch would otherwise name all of its ids
            bad = self([ex]).bad
            if bad:
                refused[ex.record_id] = f"{bad[0].field}: {bad[0].reason}"
        return refused
