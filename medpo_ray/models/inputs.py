"""Model inputs for (image, prompt, completion): the exact prompt text vLLM is given, and the
transformers batch (with `mm_token_type_ids`) that scores a completion under the same prompt."""
from __future__ import annotations

import io
from collections.abc import Sequence

from medpo_ray.data.pixels import to_8bit
from medpo_ray.errors import MedpoError


class ImageError(MedpoError):
    """An image that cannot be decoded or that the processor cannot handle; names the item."""


def open_image(data, item: str = "?"):
    """Decode PNG/JPEG bytes (or take a PIL image) as 8-bit RGB (data/pixels.py); `item` names the record in errors."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(data, Image.Image):
        return to_8bit(data).convert("RGB")
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) == 0:
        raise ImageError(f"item {item!r}: image is empty or not encoded bytes ({type(data).__name__})")
    try:
        img = Image.open(io.BytesIO(bytes(data)))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        reason = "not a readable image file" if isinstance(e, UnidentifiedImageError) else str(e)
        raise ImageError(f"item {item!r}: image cannot be decoded: {reason}") from None
    return to_8bit(img).convert("RGB")  # 16-bit grey (DICOM exports) scaled, not clipped to white


def image_token_count(processor, image, item: str = "?") -> int:
    """How many placeholder tokens the processor expands this image to (raises ImageError if unusable)."""
    try:
        counts = processor._get_num_multimodal_tokens(image_sizes=[(image.height, image.width)])
    except ValueError as e:  # e.g. an aspect ratio the processor refuses
        raise ImageError(f"item {item!r}: image {image.width}x{image.height} rejected by the processor: {e}") from None
    return int(counts.num_image_tokens[0])


def render_prompt(processor, prompt: str) -> str:
    """The chat-formatted prompt (one image, then the text, then the assistant header)."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode_completion(processor, text: str) -> list[int]:
    """Token ids of a completion; special-token strings in the text stay plain text, never image tokens."""
    return processor.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def build_batch(processor, images: Sequence, prompts: Sequence[str],
                completions: Sequence[Sequence[int]]) -> dict:
    """A right-padded transformers batch of prompt+completion with the completion positions marked.

    Returns the model's keyword arguments (input_ids, attention_mask, the processor's image tensors such
    as pixel_values / image_grid_thw, and mm_token_type_ids where the model takes it) plus
    `completion_mask` (1 where input_ids holds a completion token) and `prompt_lengths` (see
    `model_inputs`). Logits at position t predict token t+1, so a scorer shifts by one.
    """
    import torch

    if not (len(images) == len(prompts) == len(completions)):
        raise ValueError("images, prompts and completions must have the same length")
    # transformers 5 Qwen2-VL needs mm_token_type_ids for its 3-D rotary positions; models that do not
    # declare it (LLaVA-style) must not be given it.
    typed = "mm_token_type_ids" in processor.model_input_names
    enc = processor(text=[render_prompt(processor, p) for p in prompts], images=list(images),
                    return_mm_token_type_ids=typed)
    rows, types, comp_masks = [], [], []
    for i, comp in enumerate(completions):
        ids = enc["input_ids"][i]
        rows.append(list(ids) + list(comp))
        if typed:  # completion tokens are text, whatever their id
            types.append(list(enc["mm_token_type_ids"][i]) + [0] * len(comp))
        comp_masks.append([0] * len(ids) + [1] * len(comp))
    width = max(len(r) for r in rows)
    pad = processor.tokenizer.pad_token_id

    def padded(seqs, value):
        return torch.tensor([s + [value] * (width - len(s)) for s in seqs], dtype=torch.long)

    def tensor(v):  # Qwen processors give one array per key, CLIP-style ones (LLaVA) a list per image
        return torch.stack([torch.as_tensor(x) for x in v]) if isinstance(v, list) else torch.as_tensor(v)

    batch = {k: tensor(v) for k, v in enc.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    batch.update(input_ids=padded(rows, pad), attention_mask=padded([[1] * len(r) for r in rows], 0),
                 completion_mask=padded(comp_masks, 0), prompt_lengths=[len(ids) for ids in enc["input_ids"]])
    if typed:
        batch["mm_token_type_ids"] = padded(types, 0)
    return batch


def model_inputs(batch: dict) -> dict:
    """The keyword arguments of the model's forward from a `build_batch` batch."""
    return {k: v for k, v in batch.items() if k not in ("completion_mask", "prompt_lengths")}
