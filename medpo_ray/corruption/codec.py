"""Corruption on encoded images and on records: decode, corrupt, re-encode as PNG, errors per record."""
from __future__ import annotations

import io
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from medpo_ray.config import CorruptionConfig
from medpo_ray.corruption.corrupt import control_corruption, corrupt_image
from medpo_ray.corruption.errors import CorruptionError
from medpo_ray.corruption.regions import Box
from medpo_ray.data.pixels import to_8bit
from medpo_ray.data.record import BadRecord, Record

# Modes kept as they are; others are converted to the nearest one (palette -> RGB, alpha dropped).
_KEEP = {"L": "L", "RGB": "RGB", "P": "RGB", "RGBA": "RGB", "LA": "L", "1": "L", "CMYK": "RGB", "YCbCr": "RGB"}


def decode_image(data: bytes, field: str = "image") -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, ...) -> uint8 (H, W) or (H, W, 3); the error names `field`."""
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) == 0:
        raise CorruptionError(f"{field}: no image bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                im = to_8bit(im)  # 16-bit grey (DICOM exports): scaled as the model sees it, not clipped
                if im.mode not in _KEEP:
                    raise CorruptionError(f"{field}: pixel mode {im.mode} is not a grey or colour image")
                return np.asarray(im.convert(_KEEP[im.mode]))
    except CorruptionError:
        raise
    except UnidentifiedImageError:
        raise CorruptionError(f"{field}: not a recognised image format ({len(data)} bytes)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        raise CorruptionError(f"{field}: cannot decode image ({e})") from None


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (H, W) or (H, W, 3) -> PNG bytes (fast compression: the bytes only cross the object store)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def corrupt_png(data: bytes, *, mask_png: bytes | None = None, boxes: Sequence[Box] = (),
                mode: str | None = None, key: str = "", cfg: CorruptionConfig | None = None,
                control: bool = False) -> tuple[bytes, dict[str, Any]]:
    """corrupt_image (or control_corruption) on encoded bytes: returns (PNG bytes, note)."""
    image = decode_image(data, "image")
    mask = decode_image(mask_png, "lesion_mask") if mask_png is not None else None
    fn = control_corruption if control else corrupt_image
    result = fn(image, mask=mask, boxes=boxes, mode=mode, key=key, cfg=cfg)
    return encode_png(result.image), result.note


@dataclass(frozen=True)
class CorruptedImage:
    """x~ for one record: PNG bytes and the corruption note (a metric that travels with the record)."""

    record_id: str
    image: bytes
    note: dict[str, Any]


def corrupt_records(records: Iterable[Record], cfg: CorruptionConfig | None = None, *,
                    control: bool = False) -> tuple[list[CorruptedImage], list[BadRecord]]:
    """Corrupt each record's image (keyed by record id); a bad record is reported, the rest go on.

    With cfg.reports == "whole", report records ignore their lesion mask/boxes (whole-image noise).
    """
    cfg = cfg or CorruptionConfig()
    done, bad = [], []
    for rec in records:
        lesion = not (rec.task == "report" and cfg.reports == "whole")
        try:
            png, note = corrupt_png(rec.image, mask_png=rec.lesion_mask if lesion else None,
                                    boxes=rec.boxes if lesion else (), key=rec.record_id, cfg=cfg,
                                    control=control)
        except CorruptionError as e:
            field, _, reason = str(e).partition(": ")
            bad.append(BadRecord(rec.record_id, field, reason, source="corruption"))
            continue
        done.append(CorruptedImage(rec.record_id, png, note))
    return done, bad
