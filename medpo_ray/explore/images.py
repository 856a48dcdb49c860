"""The pictures of a pair: the clean image x with its lesion region overlaid (mask, else boxes), and x~
exactly as the corruption stage made it (keyed by record id, so it is recomputed bit for bit)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from medpo_ray.config import CorruptionConfig
from medpo_ray.corruption import corrupt_records
from medpo_ray.corruption.codec import decode_image
from medpo_ray.corruption.regions import boxes_to_region
from medpo_ray.data.record import Record

_RED = np.array([230, 40, 40], dtype=np.float32)


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def overlay_png(record: Record) -> bytes:
    """x as RGB PNG with the lesion mask (or boxes) tinted red at 45 %."""
    image = decode_image(record.image)
    rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
    region = None
    if record.lesion_mask is not None:
        mask = decode_image(record.lesion_mask, "lesion_mask")
        region = (mask if mask.ndim == 2 else mask.max(axis=2)) > 0
    elif record.boxes:
        region = boxes_to_region(image.shape[:2], record.boxes)
    out = rgb.astype(np.float32)
    if region is not None and region.shape == out.shape[:2]:
        out[region] = 0.55 * out[region] + 0.45 * _RED
    return _png(out.clip(0, 255).astype(np.uint8))


def corrupted_png(record: Record, cfg: dict | None) -> bytes | None:
    """x~ of the record under the run's corruption settings; None when it cannot be made."""
    done, _ = corrupt_records([record], CorruptionConfig(**(cfg or {})))
    return done[0].image if done else None
