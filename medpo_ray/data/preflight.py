"""Images the policy's processor cannot take, found before any actor starts.

Validation (`data validate`) checks that an image decodes; whether the model can take it depends on the
model: Qwen2-VL's processor refuses an aspect ratio over 200:1, for example. Without this check such a
record passes every check and fails inside the rollout engine. Only the image's header is read (its
size), so a large split is checked in seconds.
"""
from __future__ import annotations

import io
from collections.abc import Iterable

from medpo_ray.data.record import Record


def processor_refusals(records: Iterable[Record], model_dir) -> dict[str, str]:
    """{record id: "image: reason"} of the records whose image the model's processor refuses."""
    from PIL import Image, UnidentifiedImageError

    from medpo_ray.models.inputs import ImageError, image_token_count
    from medpo_ray.models.loading import load_processor

    processor = load_processor(model_dir)
    refused: dict[str, str] = {}
    for r in records:
        try:
            with Image.open(io.BytesIO(r.image)) as im:  # lazy: the size comes from the header
                image_token_count(processor, im, r.record_id)
        except ImageError as e:
            refused[r.record_id] = f"image: {str(e).split(': ', 1)[-1]}"
        except (UnidentifiedImageError, OSError, ValueError, TypeError) as e:
            refused[r.record_id] = f"image: cannot be read ({e})"
    return refused
