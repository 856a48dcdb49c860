"""Where to corrupt: the (dilated) lesion region from a mask or boxes, and a same-shape control place.

Everything works on boolean (H, W) arrays with numpy only, inside the region's bounding box plus a
margin, so small lesions on large images cost little.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medpo_ray.corruption.errors import CorruptionError

Box = tuple[float, float, float, float]


def bbox(region: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) half-open bounding box of a boolean array, or None when it is empty."""
    rows = np.flatnonzero(region.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(region.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def dilate(region: np.ndarray, radius: int) -> np.ndarray:
    """Grow a boolean region by a Euclidean disk of `radius` pixels (exact on the pixel grid)."""
    box = bbox(region)
    if radius <= 0 or box is None:
        return region.copy()
    h, w = region.shape
    y0, y1 = max(box[0] - radius, 0), min(box[1] + radius, h)
    x0, x1 = max(box[2] - radius, 0), min(box[3] + radius, w)
    cur = region[y0:y1, x0:x1]
    rows, cols = cur.shape
    # A disk is a stack of horizontal segments: dilate each row by the half-width at height dy (via a
    # prefix sum, so any width costs the same), shift by dy, OR. O(radius) array operations.
    prefix = np.pad(np.cumsum(cur, axis=1, dtype=np.int32), ((0, 0), (1, 0)))
    x = np.arange(cols)
    out = np.zeros_like(cur)
    for dy in range(-radius, radius + 1):
        half = math.isqrt(radius * radius - dy * dy)
        seg = prefix[:, np.minimum(x + half + 1, cols)] > prefix[:, np.maximum(x - half, 0)]
        if dy >= 0:
            out[dy:] |= seg[: rows - dy]
        else:
            out[:dy] |= seg[-dy:]
    full = np.zeros_like(region)
    full[y0:y1, x0:x1] = out
    return full


def boxes_to_region(shape: tuple[int, int], boxes: Sequence[Box]) -> np.ndarray:
    """Union of (x0, y0, x1, y1) pixel boxes as a boolean (H, W) array, clipped to the image."""
    h, w = shape
    region = np.zeros((h, w), dtype=bool)
    for i, box in enumerate(boxes):
        try:
            x0, y0, x1, y1 = (float(v) for v in box)
        except (TypeError, ValueError):
            raise CorruptionError(f"boxes[{i}]: expected (x0, y0, x1, y1) numbers, got {box!r}") from None
        if not all(map(math.isfinite, (x0, y0, x1, y1))) or x1 <= x0 or y1 <= y0:
            raise CorruptionError(f"boxes[{i}]: {box!r} is not a box with x1 > x0 and y1 > y0")
        c0, c1 = max(math.floor(x0), 0), min(math.ceil(x1), w)
        r0, r1 = max(math.floor(y0), 0), min(math.ceil(y1), h)
        if c1 <= c0 or r1 <= r0:
            raise CorruptionError(f"boxes[{i}]: {box!r} lies outside the {w}x{h} image")
        region[r0:r1, c0:c1] = True
    return region


def lesion_region(shape: tuple[int, int], mask: np.ndarray | None, boxes: Sequence[Box],
                  dilate_px: int) -> tuple[np.ndarray | None, str]:
    """(dilated lesion region, source): source is mask | boxes | whole (region None: no lesion known)."""
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape[:2] != tuple(shape) or mask.ndim not in (2, 3):
            raise CorruptionError(f"lesion_mask: shape {mask.shape} does not match the image {tuple(shape)}")
        found = mask.any(axis=2) if mask.ndim == 3 else mask.astype(bool)
        if found.any():
            return dilate(found, dilate_px), "mask"
    if len(boxes):
        return dilate(boxes_to_region(shape, boxes), dilate_px), "boxes"
    return None, "whole"


def control_shift(region: np.ndarray, rng: np.random.Generator) -> tuple[int, int] | None:
    """A random (dy, dx) that moves `region` fully inside the image and off itself, or None if none does.

    The overlap of the shifted region with the original for every shift at once is a cross-correlation,
    computed with one zero-padded FFT, so the choice is exact and uniform over all valid shifts.
    """
    box = bbox(region)
    if box is None:
        return None
    y0, y1, x0, x1 = box
    crop = region[y0:y1, x0:x1].astype(np.float64)
    h, w = region.shape
    # Padding by the crop's size (not the image's) is enough for the shifts asked below not to wrap.
    full = np.zeros((h + y1 - y0, w + x1 - x0))
    full[:h, :w] = region
    kernel = np.zeros_like(full)
    kernel[: y1 - y0, : x1 - x0] = crop
    # overlap[a, b] = sum_p crop[p] * region[p + (a, b)]: the crop placed with its corner at (a, b).
    overlap = np.fft.irfft2(np.fft.rfft2(full) * np.conj(np.fft.rfft2(kernel)), s=full.shape)
    fits = overlap[: h - (y1 - y0) + 1, : w - (x1 - x0) + 1] < 0.5
    corners = np.argwhere(fits)
    if corners.size == 0:
        return None
    a, b = corners[rng.integers(len(corners))]
    return int(a) - y0, int(b) - x0


def shift_region(region: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The region moved by (dy, dx); the caller guarantees it stays inside the image."""
    out = np.zeros_like(region)
    y0, y1, x0, x1 = bbox(region)
    out[y0 + dy:y1 + dy, x0 + dx:x1 + dx] = region[y0:y1, x0:x1]
    return out
