"""SFT batches: prompt + target + EOS under the chat template, the loss on the answer only, and each
image's lesion-cell target for the auxiliary loss.

Records are prepared once (image and mask decoded, completion tokenized, length checked); a record
that cannot be trained on becomes a BadRecord naming its field, and the rest go on.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medpo_ray.data.record import BadRecord, Record
from medpo_ray.errors import MedpoError
from medpo_ray.models.inputs import (
    build_batch,
    encode_completion,
    image_token_count,
    open_image,
    render_prompt,
)

IGNORE_INDEX = -100  # label of positions without loss (transformers' convention)
_SOURCE = "sft"


class SFTDataError(MedpoError):
    """No usable training record, or none of a kind the configuration asks for."""


@dataclass(frozen=True)
class SFTItem:
    """One prepared training example; `mask` is the lesion mask at image resolution (None: unknown)."""

    record_id: str
    task: str
    image: object  # PIL RGB image
    prompt: str
    completion: tuple[int, ...]  # target ids followed by EOS
    mask: np.ndarray | None
    # Radius level index per pixel (-1: no lesion), only when the size-level auxiliary target is asked for.
    levels: np.ndarray | None = None


def decode_mask(data: bytes, size: tuple[int, int], item: str) -> np.ndarray:
    """Nonzero pixels of an encoded mask PNG as a bool (height, width) array matching `size` (w, h)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            mask = np.asarray(img.convert("L")) > 0
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise MedpoError(f"item {item!r}: lesion mask cannot be decoded: {e}") from None
    if mask.shape != (size[1], size[0]):
        raise MedpoError(f"item {item!r}: lesion mask is {mask.shape[1]}x{mask.shape[0]}, "
                         f"image is {size[0]}x{size[1]}")
    return mask


def lesion_cells(mask: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(rows, cols) bool grid: whether each merged image cell holds any lesion pixel.

    The processor resizes the whole image onto rows x cols cells of 28 x 28 resized pixels, so cell
    (i, j) covers original rows [i*H/rows, (i+1)*H/rows); a pixel straddling two cells counts for both.
    """
    h, w = mask.shape
    out = np.zeros((rows, cols), bool)
    for i in range(rows):
        r0, r1 = (i * h) // rows, -(-((i + 1) * h) // rows)
        for j in range(cols):
            c0, c1 = (j * w) // cols, -(-((j + 1) * w) // cols)
            out[i, j] = mask[r0:r1, c0:c1].any()
    return out


def decode_instances(data: bytes, size: tuple[int, int], item: str) -> np.ndarray:
    """Instance ids (0 = background) of an encoded mask PNG as a uint8 (height, width) array matching `size`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            ids = np.asarray(img.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise MedpoError(f"item {item!r}: lesion mask cannot be decoded: {e}") from None
    if ids.shape != (size[1], size[0]):
        raise MedpoError(f"item {item!r}: lesion mask is {ids.shape[1]}x{ids.shape[0]}, image is {size[0]}x{size[1]}")
    return ids


def level_map(ids: np.ndarray, findings: dict | None, radii: Sequence[float], item: str) -> np.ndarray:
    """Per pixel, the index in `radii` of the radius of the lesion there (-1: background), from the
    instance mask and the findings' lesions ({id, r_px})."""
    out = np.full(ids.shape, -1, np.int8)
    for les in (findings or {}).get("lesions", ()):
        if les.get("r_px") not in radii:
            raise MedpoError(f"item {item!r}: lesion {les.get('id')} has radius {les.get('r_px')!r} px, "
                             f"not one of the radius levels {tuple(radii)}")
        out[ids == les["id"]] = radii.index(les["r_px"])
    if ((ids > 0) & (out < 0)).any():
        raise MedpoError(f"item {item!r}: the lesion mask has instances the findings do not list")
    return out


def lesion_cell_levels(levels: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(rows, cols) int64 grid: per merged cell, the radius level covering most of its lesion pixels
    (ties: the smaller level), -1 for a cell without lesion pixels. Cells as in `lesion_cells`."""
    h, w = levels.shape
    out = np.full((rows, cols), -1, np.int64)
    for i in range(rows):
        r0, r1 = (i * h) // rows, -(-((i + 1) * h) // rows)
        for j in range(cols):
            c0, c1 = (j * w) // cols, -(-((j + 1) * w) // cols)
            cell = levels[r0:r1, c0:c1]
            cell = cell[cell >= 0]
            if cell.size:
                out[i, j] = int(np.argmax(np.bincount(cell)))
    return out


def end_of_turn_id(tok) -> int:
    """The token that ends an assistant turn: <|im_end|> in Qwen chat templates, else the tokenizer's EOS."""
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tok.unk_token_id:
        return im_end
    if tok.eos_token_id is None:
        raise SFTDataError("the tokenizer has neither <|im_end|> nor an EOS token to end an answer with")
    return tok.eos_token_id


def prepare(records: Sequence[Record], processor, max_length: int, with_masks: bool = True,
            radii: Sequence[float] = ()) -> tuple[list[SFTItem], list[BadRecord]]:
    """SFTItems of the trainable records and a BadRecord (id, field, reason) for each other one.

    With `radii` (the dataset's discrete lesion radii, ascending), items with a mask also carry the
    per-pixel radius level for the size-level auxiliary target."""
    tok = processor.tokenizer
    eos = end_of_turn_id(tok)
    prompt_len: dict[str, int] = {}
    images: dict[bytes, tuple] = {}  # VQA records share their study's image bytes: decode once
    items, bad = [], []
    for rec in records:
        field = "image"
        try:
            if rec.image not in images:
                img = open_image(rec.image, rec.record_id)
                images[rec.image] = (img, image_token_count(processor, img, rec.record_id))
            image, n_image = images[rec.image]
            field = "target"
            if not rec.target.strip():
                raise MedpoError(f"item {rec.record_id!r}: empty target")
            completion = (*encode_completion(processor, rec.target), eos)
            field = "prompt"
            if rec.prompt not in prompt_len:
                prompt_len[rec.prompt] = len(tok(render_prompt(processor, rec.prompt), add_special_tokens=False)
                                             ["input_ids"])
            length = prompt_len[rec.prompt] - 1 + n_image + len(completion)
            if length > max_length:
                raise MedpoError(f"item {rec.record_id!r}: {length} tokens with image and target, "
                                 f"model.max_model_len is {max_length}")
            field = "lesion_mask"
            mask = levels = None
            if with_masks and rec.lesion_mask is not None:
                if radii:
                    ids = decode_instances(rec.lesion_mask, image.size, rec.record_id)
                    mask = ids > 0
                    field = "findings"
                    levels = level_map(ids, rec.findings, list(radii), rec.record_id)
                else:
                    mask = decode_mask(rec.lesion_mask, image.size, rec.record_id)
        except MedpoError as e:
            bad.append(BadRecord(rec.record_id, field, str(e), _SOURCE))
            continue
        items.append(SFTItem(rec.record_id, rec.task, image, rec.prompt, completion, mask, levels))
    return items, bad


def collate(items: Sequence[SFTItem], processor, merge_size: int = 2) -> dict:
    """Model kwargs with `labels` (IGNORE_INDEX outside the completion), plus `cell_targets`: 1.0 per merged
    image cell that holds lesion pixels, in the vision tower's order (image by image, row-major); and
    `cell_valid`, False for the cells of images without a mask; and, when any item carries radius levels,
    `cell_levels`: the level of each lesion cell (int64, -1 where there is none or it is unknown)."""
    import torch

    batch = build_batch(processor, [it.image for it in items], [it.prompt for it in items],
                        [list(it.completion) for it in items])
    comp = batch.pop("completion_mask")
    batch.pop("prompt_lengths")
    batch["labels"] = batch["input_ids"].masked_fill(comp == 0, IGNORE_INDEX)
    if "image_grid_thw" not in batch:  # a family without the cell grid (families.py): no auxiliary targets
        return batch
    targets, valid, levels = [], [], []
    for it, (t, h, w) in zip(items, batch["image_grid_thw"].tolist(), strict=True):
        rows, cols = h // merge_size, w // merge_size
        if it.mask is None:  # no mask known: its cells take no part in the auxiliary loss
            targets.append(np.zeros(t * rows * cols, np.float32))
            valid.append(np.zeros(t * rows * cols, bool))
        else:
            targets.append(np.tile(lesion_cells(it.mask, rows, cols).reshape(-1), t).astype(np.float32))
            valid.append(np.ones(t * rows * cols, bool))
        levels.append(np.full(t * rows * cols, -1, np.int64) if it.levels is None
                      else np.tile(lesion_cell_levels(it.levels, rows, cols).reshape(-1), t))
    batch["cell_targets"] = torch.from_numpy(np.concatenate(targets))
    batch["cell_valid"] = torch.from_numpy(np.concatenate(valid))
    if any(it.levels is not None for it in items):
        batch["cell_levels"] = torch.from_numpy(np.concatenate(levels))
    return batch
