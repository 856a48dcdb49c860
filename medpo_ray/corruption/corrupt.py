"""Lesion-aware corruption of one image (x -> x~) and its same-area control, deterministic by key."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medpo_ray.config import CorruptionConfig
from medpo_ray.corruption import fill
from medpo_ray.corruption.errors import CorruptionError
from medpo_ray.corruption.regions import Box, bbox, control_shift, lesion_region, shift_region

MODES = ("inpaint", "noise", "blur", "black")


@dataclass(frozen=True)
class CorruptionResult:
    """The corrupted uint8 image (same shape as the input) and its note.

    note: mode (what was applied), region (mask | boxes | whole | control | none), region_pixels,
    pixels_changed (pixels with any channel different), and for a control the shift (dy, dx).
    """

    image: np.ndarray
    note: dict[str, Any] = field(default_factory=dict)


def rng_for(key: str, purpose: str = "corrupt") -> np.random.Generator:
    """A generator seeded by blake2b(key, purpose): stable across processes, unlike hash()."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16,
                             person=purpose.encode()[:16]).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest, "little")))


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise CorruptionError(f"image: expected a uint8 numpy array, got {kind}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and not 1 <= image.shape[2] <= 4) or 0 in image.shape:
        raise CorruptionError(f"image: expected shape (H, W) or (H, W, C<=4), got {image.shape}")
    return image if image.ndim == 3 else image[..., None]


def _apply(img: np.ndarray, region: np.ndarray, mode: str, sigma: float, cfg: CorruptionConfig,
           rng: np.random.Generator) -> np.ndarray:
    """Corrupt `region` of the uint8 (H, W, C) image; pixels outside are copied, never recomputed."""
    y0, y1, x0, x1 = bbox(region)
    # Work on the region's box plus the context the mode reads (blur kernel, inpainting ring).
    margin = {"blur": 3 * cfg.blur_radius + 1, "inpaint": max(8, (max(y1 - y0, x1 - x0) + 1) // 2)}.get(mode, 0)
    h, w = region.shape
    y0, y1, x0, x1 = max(y0 - margin, 0), min(y1 + margin, h), max(x0 - margin, 0), min(x1 + margin, w)
    crop = img[y0:y1, x0:x1].astype(np.float32)
    hole = region[y0:y1, x0:x1]
    if mode == "noise":
        new = fill.noise(crop, hole, sigma * 255.0, rng)
    elif mode == "black":
        new = fill.black(crop, hole)
    elif mode == "blur":
        new = fill.blur(crop, cfg.blur_radius)
    else:
        new = fill.inpaint(crop, hole, cfg.inpaint_iters)
    out = img.copy()
    out[y0:y1, x0:x1][hole] = np.clip(np.rint(new[hole]), 0, 255).astype(np.uint8)
    return out


def _result(original: np.ndarray, out: np.ndarray, squeeze: bool, **note: Any) -> CorruptionResult:
    changed = int((out != original).any(axis=2).sum())
    return CorruptionResult(out[..., 0] if squeeze else out, {**note, "pixels_changed": changed})


def _mode(mode: str | None, cfg: CorruptionConfig) -> str:
    mode = cfg.mode if mode is None else mode
    if mode not in MODES:
        raise CorruptionError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    return mode


def corrupt_image(image: np.ndarray, *, mask: np.ndarray | None = None, boxes: Sequence[Box] = (),
                  mode: str | None = None, key: str = "", cfg: CorruptionConfig | None = None
                  ) -> CorruptionResult:
    """Corrupt the (dilated) lesion region given by mask or boxes; without either, whole-image noise.

    mode None means cfg.mode (inpaint by default). The whole-image fallback is always noise of
    cfg.fallback_sigma (inpainting or blurring a whole image has no surroundings to draw from).
    """
    cfg = cfg or CorruptionConfig()
    mode = _mode(mode, cfg)
    img = _check_image(image)
    region, source = lesion_region(img.shape[:2], mask, boxes, cfg.dilate_px)
    rng = rng_for(key)
    if region is None:
        region = np.ones(img.shape[:2], dtype=bool)
        out = _apply(img, region, "noise", cfg.fallback_sigma, cfg, rng)
        return _result(img, out, image.ndim == 2, mode="noise", region="whole",
                       region_pixels=int(region.size))
    out = _apply(img, region, mode, cfg.sigma, cfg, rng)
    return _result(img, out, image.ndim == 2, mode=mode, region=source, region_pixels=int(region.sum()))


def control_corruption(image: np.ndarray, *, mask: np.ndarray | None = None, boxes: Sequence[Box] = (),
                       mode: str | None = None, key: str = "", cfg: CorruptionConfig | None = None
                       ) -> CorruptionResult:
    """The same corruption on the same-shape region moved to a lesion-free place (for evaluation).

    The shift is drawn uniformly (seeded by key) among those that keep the moved region inside the
    image and disjoint from the dilated lesion region. Without a lesion region, or when no shift
    fits, the image comes back unchanged with region "none" and the reason in the note.
    """
    cfg = cfg or CorruptionConfig()
    mode = _mode(mode, cfg)
    img = _check_image(image)
    region, source = lesion_region(img.shape[:2], mask, boxes, cfg.dilate_px)
    if region is None:
        return _result(img, img.copy(), image.ndim == 2, mode=mode, region="none", region_pixels=0,
                       reason="no lesion region to move")
    shift = control_shift(region, rng_for(key, "control-place"))
    if shift is None:
        return _result(img, img.copy(), image.ndim == 2, mode=mode, region="none", region_pixels=0,
                       reason="no lesion-free place of the same shape")
    moved = shift_region(region, *shift)
    out = _apply(img, moved, mode, cfg.sigma, cfg, rng_for(key))
    return _result(img, out, image.ndim == 2, mode=mode, region="control", source=source,
                   region_pixels=int(moved.sum()), shift=list(shift))
