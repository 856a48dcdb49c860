"""Synthetic lesions on a real slice: placement per patient side, exact instance masks and boxes,
diameter in mm and size bin, and the difficulty knob.

A lesion is a disc of radius `r_px` around the pixel (cx, cy): its mask is exactly the pixels with
(x - cx)^2 + (y - cy)^2 <= r_px^2, its box (x0, y0, x1, y1) encloses them with exclusive x1/y1, and
its diameter is 2 * r_px * mm_per_px rounded to whole mm. The lesion is a homogeneous blob of
intensity m +- amp, where m is the mean background within 1.5 r_px: the sign is chosen against it
(brighter on dark tissue, darker on bright tissue), which is what makes the lesions learnable at all
(shared/design/DATA.md, "Learnability"). It is blended in with weight exp(-1.5 t^2), t = distance /
r_px, so the edge keeps ~22% of the contrast and the visible blob is the masked one.

Difficulty d in [0, 1] (radii in pixels at 112 px, scaled by size / 112):
    amplitude  = 0.75 - 0.6 d        (d=0: 0.75, d=0.25: 0.60, d=0.5: 0.45, d=1: 0.15)
    radius_min = 6 - 4 d             (6, 5, 4, 2 px)
    radius_max = 16 - 4 d            (16, 15, 14, 12 px)
Explicit amplitude / radius overrides win over the mapping and are in pixels of the output size.

Radius levels (`radius_levels` K): 0 draws each radius uniformly in [radius_min, radius_max] (to a
quarter pixel); K >= 2 draws it from K evenly spaced values radius_min + k (radius_max - radius_min) /
(K - 1), each rounded to a quarter pixel. The measurement in mm is then "which size, read off the image,
times the base image's scale" instead of a sub-pixel radius estimate, which a 16-token image cannot
give (diameter = 2 r mm_per_px with mm_per_px up to ~3 at 112 px, so +-2 mm is +-0.35 px of radius).
Keep adjacent levels well apart on every base: 2 * spacing * mm_per_px >> 4 mm (`level_gaps_mm`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medpo_ray.errors import MedpoError

SIDES = ("right", "left")  # report order: patient right first
SIZE_BINS = ("small", "moderate", "large")
# P(total lesion count = 0, 1, 2, 3): a quarter of the studies are normal.
COUNT_PROBS = (0.25, 0.35, 0.25, 0.15)
_PROFILE_K = 1.5
_GAP_PX = 2  # minimum background between two lesions, so instances never touch
_TRIES = 60


class LesionParamsError(MedpoError, ValueError):
    """Lesion generator knobs that cannot produce a valid lesion; the message names the knob."""


def size_bin(diameter_mm: float) -> str:
    """small < 10 mm <= moderate < 20 mm <= large."""
    if diameter_mm < 10:
        return "small"
    return "moderate" if diameter_mm < 20 else "large"


@dataclass(frozen=True)
class LesionParams:
    """Lesion contrast and radius range, in pixels of the output image."""

    amplitude: float
    radius_min: float
    radius_max: float
    radius_levels: int = 0  # 0: continuous radii; K >= 2: K evenly spaced radii (module docstring)

    @classmethod
    def from_difficulty(cls, difficulty: float, size: int, amplitude: float | None = None,
                        radius_min: float | None = None, radius_max: float | None = None,
                        radius_levels: int | None = None) -> LesionParams:
        """The documented difficulty mapping, with explicit overrides; validated against `size`."""
        if not 0.0 <= difficulty <= 1.0:
            raise LesionParamsError(f"difficulty must be in [0, 1], got {difficulty}")
        scale = size / 112
        p = cls(
            amplitude=0.75 - 0.6 * difficulty if amplitude is None else amplitude,
            radius_min=(6 - 4 * difficulty) * scale if radius_min is None else radius_min,
            radius_max=(16 - 4 * difficulty) * scale if radius_max is None else radius_max,
            radius_levels=radius_levels or 0,
        )
        p.check(size)
        return p

    def check(self, size: int) -> None:
        """Raise LesionParamsError naming the knob that is out of range for this image size."""
        if not 0.0 < self.amplitude <= 1.0:
            raise LesionParamsError(f"amplitude must be in (0, 1], got {self.amplitude}")
        if self.radius_min < 1.0:
            raise LesionParamsError(f"radius_min must be >= 1 px, got {self.radius_min}")
        if self.radius_max < self.radius_min:
            raise LesionParamsError(f"radius_max ({self.radius_max}) must be >= radius_min ({self.radius_min})")
        if self.radius_max > size / 6:
            raise LesionParamsError(f"radius_max {self.radius_max} px is too large for a {size} px image "
                                    f"(at most size/6 = {size / 6:.1f} px, so two lesions fit on one side)")
        if isinstance(self.radius_levels, bool) or not isinstance(self.radius_levels, int) \
                or self.radius_levels < 0 or self.radius_levels == 1:
            raise LesionParamsError(f"radius_levels must be 0 (continuous radii) or an integer >= 2, "
                                    f"got {self.radius_levels!r}")
        radii = self.radii()
        if len(set(radii)) != len(radii):
            raise LesionParamsError(f"radius_levels {self.radius_levels} is too many for radius "
                                    f"{self.radius_min}-{self.radius_max} px: levels {radii} collide at "
                                    "quarter-pixel precision")

    def radii(self) -> tuple[float, ...]:
        """The K radius levels in pixels (quarter-pixel values, ascending); () for continuous radii."""
        k = self.radius_levels
        if not k:
            return ()
        step = (self.radius_max - self.radius_min) / (k - 1)
        return tuple(round((self.radius_min + i * step) * 4) / 4 for i in range(k))

    def level_gaps_mm(self, mm_per_px: float) -> tuple[float, ...]:
        """Diameter difference in mm between adjacent radius levels at this scale; () when continuous."""
        radii = self.radii()
        return tuple(2 * (b - a) * mm_per_px for a, b in zip(radii, radii[1:], strict=False))

    def draw_radius(self, rng: np.random.Generator) -> float:
        """One lesion radius in pixels: a quarter-pixel uniform draw, or one of the levels."""
        radii = self.radii()
        if radii:
            return radii[int(rng.integers(len(radii)))]
        # Quarter-pixel radii: exact in binary floats, so masks and stored values agree bit for bit.
        return round(float(rng.uniform(self.radius_min, self.radius_max)) * 4) / 4


def mask_bbox(mask: np.ndarray) -> list[int]:
    """[x0, y0, x1, y1] of the nonzero pixels, x1/y1 exclusive."""
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _fits(cx: int, cy: int, r: float, side: str, size: int, placed: list[tuple[int, int, float]]) -> bool:
    # The whole disc stays in the image and on its own half (patient right = image left), so the
    # side of every lesion is unambiguous from the pixels alone.
    half = size / 2
    if cx - r < 0 or cy - r < 0 or cx + r > size - 1 or cy + r > size - 1:
        return False
    if (side == "right" and cx + r >= half) or (side == "left" and cx - r < half):
        return False
    return all((cx - x) ** 2 + (cy - y) ** 2 > (r + q + _GAP_PX) ** 2 for x, y, q in placed)


def place_lesions(rng: np.random.Generator, size: int, regions: dict[str, tuple[float, float, float, float]],
                  params: LesionParams) -> list[dict]:
    """Draw 0-3 non-touching lesions with centres in their side's region box (pixel coordinates).

    Returns lesion dicts {side, cx, cy, r_px} sorted right side first, then top to bottom, then left
    to right. A lesion that finds no room in `_TRIES` draws is dropped, so the list is always valid.
    """
    n = int(rng.choice(len(COUNT_PROBS), p=COUNT_PROBS))
    placed: list[dict] = []
    for _ in range(n):
        side = SIDES[int(rng.integers(2))]
        r = params.draw_radius(rng)
        x0, y0, x1, y1 = regions[side]
        for _ in range(_TRIES):
            cx = int(rng.integers(int(x0), max(int(x0) + 1, int(x1))))
            cy = int(rng.integers(int(y0), max(int(y0) + 1, int(y1))))
            if _fits(cx, cy, r, side, size, [(d["cx"], d["cy"], d["r_px"]) for d in placed]):
                placed.append({"side": side, "cx": cx, "cy": cy, "r_px": r})
                break
    return sorted(placed, key=lambda d: (SIDES.index(d["side"]), d["cy"], d["cx"]))


def render_lesions(rng: np.random.Generator, background: np.ndarray, lesions: list[dict],
                   params: LesionParams, mm_per_px: float, noise_sigma: float) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Paint the lesions, add acquisition noise, quantise to uint8.

    Returns (image uint8, instance mask uint8 with ids 1..n in list order, completed lesion dicts
    with id, diameter_mm, size, bbox and polarity).
    """
    size = background.shape[0]
    img = background.astype(np.float32)
    mask = np.zeros((size, size), np.uint8)
    out = []
    for i, les in enumerate(lesions, start=1):
        cx, cy, r = les["cx"], les["cy"], les["r_px"]
        # Work in the window that holds the 1.5 r neighbourhood; everything else is untouched.
        k = int(np.ceil(1.5 * r))
        x0, y0, x1, y1 = max(cx - k, 0), max(cy - k, 0), min(cx + k + 1, size), min(cy + k + 1, size)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        d2 = ((xx - cx) ** 2 + (yy - cy) ** 2).astype(np.float32)
        inside = d2 <= r * r
        # The blob replaces the tissue under it, so its contrast against the surroundings is `amp`
        # whatever texture lies beneath (an additive blob on mixed tissue can all but vanish).
        local = float(background[y0:y1, x0:x1][d2 <= 2.25 * r * r].mean())
        polarity = 1.0 if local < 0.5 else -1.0
        target = np.float32(min(max(local + polarity * params.amplitude, 0.0), 1.0))
        w = np.where(inside, np.exp(-_PROFILE_K * d2 / (r * r)), 0.0).astype(np.float32)
        img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - w) + w * target
        mask[y0:y1, x0:x1][inside] = i
        bx0, by0, bx1, by1 = mask_bbox(inside)
        diameter = int(round(2 * r * mm_per_px))
        out.append({"id": i, "side": les["side"], "cx": cx, "cy": cy, "r_px": r, "diameter_mm": diameter,
                    "size": size_bin(diameter), "bbox": [bx0 + x0, by0 + y0, bx1 + x0, by1 + y0],
                    "polarity": "bright" if polarity > 0 else "dark"})
    img = img + rng.normal(0.0, noise_sigma, img.shape).astype(np.float32)
    return np.round(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8), mask, out
