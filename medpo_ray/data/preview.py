"""A contact sheet of an embedded dataset for a person to look at: per study the image, the lesion
mask over it (one colour per instance, boxes drawn), the lesion-corrupted image and the report."""
from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from medpo_ray.data.schema import STUDIES_FILE
from medpo_ray.errors import MedpoError

_COLOURS = ((230, 60, 60), (60, 200, 80), (70, 130, 255))
_SCALE = 2  # 112 px studies become 224 px tiles
_TEXT_W = 330


class PreviewError(MedpoError):
    """The preview could not be drawn (dataset unreadable, or the corruption module unavailable)."""


def _decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("L"))


def _overlay(image: np.ndarray, mask: np.ndarray, lesions: list[dict]) -> np.ndarray:
    rgb = np.repeat(image[..., None], 3, axis=2).astype(np.float32)
    for les in lesions:
        inside = mask == les["id"]
        rgb[inside] = 0.55 * rgb[inside] + 0.45 * np.array(_COLOURS[(les["id"] - 1) % len(_COLOURS)])
    return rgb.astype(np.uint8)


def _corrupted(image: np.ndarray, mask: np.ndarray, key: str) -> np.ndarray:
    try:
        from medpo_ray.corruption import corrupt_image
    except ImportError as e:
        raise PreviewError(f"--preview needs medpo_ray.corruption.corrupt_image, which failed to import: {e}") from None
    return corrupt_image(image, mask=mask, key=key).image


def _row(study: dict) -> Image.Image:
    image, mask = _decode(study["image"]), _decode(study["lesion_mask"])
    tiles = [np.repeat(image[..., None], 3, axis=2), _overlay(image, mask, study["lesions"]),
             np.repeat(_corrupted(image, mask, study["study_id"])[..., None], 3, axis=2)]
    h, w = image.shape
    tw, th = w * _SCALE, h * _SCALE
    row = Image.new("RGB", (3 * tw + _TEXT_W, th), (255, 255, 255))
    for k, tile in enumerate(tiles):
        row.paste(Image.fromarray(tile).resize((tw, th), Image.Resampling.NEAREST), (k * tw, 0))
    draw = ImageDraw.Draw(row)
    for les in study["lesions"]:
        x0, y0, x1, y1 = (v * _SCALE for v in les["bbox"])
        draw.rectangle([tw + x0, y0, tw + x1 - 1, y1 - 1], outline=_COLOURS[(les["id"] - 1) % len(_COLOURS)])
    text = f"{study['study_id']} ({study['split']}) {study['base_image']}\n" + "\n".join(
        textwrap.wrap(study["report"], 52))
    draw.multiline_text((3 * tw + 6, 4), text, fill=(0, 0, 0), spacing=2)
    return row


def write_preview(data_dir: str | Path, out_png: str | Path, rows: int = 8) -> Path:
    """Draw the first `rows` studies of data_dir as a contact sheet PNG; returns its path."""
    import pyarrow.parquet as pq

    path = Path(data_dir) / STUDIES_FILE
    try:
        table = pq.ParquetFile(path).read_row_group(0).slice(0, rows)
    except (OSError, ValueError) as e:
        raise PreviewError(f"cannot read {path}: {e}") from None
    images = [_row(s) for s in table.to_pylist()]
    header_h = 18
    width = images[0].width if images else 400
    sheet = Image.new("RGB", (width, header_h + sum(im.height for im in images)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    tw = (width - _TEXT_W) // 3
    for k, title in enumerate(("image", "lesion mask", "corrupted (x~)", "report")):
        draw.text((k * tw + 6, 3), title, fill=(0, 0, 0))
    y = header_h
    for im in images:
        sheet.paste(im, (0, y))
        y += im.height
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, format="PNG")
    return out
