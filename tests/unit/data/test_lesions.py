"""Lesions of the embedded data: exact masks and boxes, laterality, diameters and size bins, contrast."""
import io
import math
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from medpo_ray.data.lesions import LesionParams, LesionParamsError, place_lesions, size_bin

pytestmark = pytest.mark.unit


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _lattice_disc_count(r: float) -> int:
    """Integer points with x^2 + y^2 <= r^2 (Gauss circle count), column by column."""
    k = math.floor(r)
    return sum(2 * math.isqrt(math.floor(r * r) - dx * dx) + 1 for dx in range(-k, k + 1))


def test_masks_are_exact_discs_and_boxes_enclose_them(studies):
    seen = 0
    for s in studies:
        mask = _png(s["lesion_mask"])
        assert mask.shape == _png(s["image"]).shape
        assert set(np.unique(mask)) == {0, *(les["id"] for les in s["lesions"])}
        for les in s["lesions"]:
            ys, xs = np.nonzero(mask == les["id"])
            assert len(xs) == _lattice_disc_count(les["r_px"])
            assert les["bbox"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            k = math.floor(les["r_px"])
            assert les["bbox"] == [les["cx"] - k, les["cy"] - k, les["cx"] + k + 1, les["cy"] + k + 1]
            seen += 1
    assert seen >= 20


def test_lesions_never_touch(studies):
    for s in studies:
        for a in s["lesions"]:
            for b in s["lesions"]:
                if a["id"] < b["id"]:
                    assert math.dist((a["cx"], a["cy"]), (b["cx"], b["cy"])) > a["r_px"] + b["r_px"]


def test_patient_right_is_image_left(studies):
    for s in studies:
        mask = _png(s["lesion_mask"])
        half = mask.shape[1] / 2
        for les in s["lesions"]:
            xs = np.nonzero(mask == les["id"])[1]
            if les["side"] == "right":
                assert xs.max() < half, s["study_id"]
            else:
                assert xs.min() >= half, s["study_id"]


def test_placement_keeps_sides_even_with_whole_image_regions():
    params = LesionParams.from_difficulty(0.0, 112)
    everywhere = {"right": (0, 0, 112, 112), "left": (0, 0, 112, 112)}
    placed = [les for i in range(200) for les in place_lesions(np.random.default_rng(i), 112, everywhere, params)]
    assert {les["side"] for les in placed} == {"right", "left"}
    for les in placed:
        if les["side"] == "right":
            assert les["cx"] + les["r_px"] < 56
        else:
            assert les["cx"] - les["r_px"] >= 56


@pytest.mark.parametrize("mm,expected", [(0, "small"), (9, "small"), (9.99, "small"), (10, "moderate"),
                                         (19, "moderate"), (19.99, "moderate"), (20, "large"), (87, "large")])
def test_size_bins(mm, expected):
    assert size_bin(mm) == expected


def test_diameters_match_mask_area_and_bins(studies):
    for s in studies:
        mm = s["findings"]["mm_per_px"]
        mask = _png(s["lesion_mask"])
        for les in s["lesions"]:
            # Diameter of the circle with the mask's area: an estimate independent of r_px.
            from_area = 2 * math.sqrt(np.count_nonzero(mask == les["id"]) / math.pi) * mm
            assert abs(from_area - les["diameter_mm"]) <= 0.5 + 0.6 * mm
            assert les["size"] == size_bin(les["diameter_mm"])


def test_lesion_contrast_has_the_recorded_polarity(studies):
    for s in studies:
        img = _png(s["image"]).astype(float)
        yy, xx = np.mgrid[:img.shape[0], :img.shape[1]]
        for les in s["lesions"]:
            d = np.hypot(xx - les["cx"], yy - les["cy"])
            core = img[d <= 0.3 * les["r_px"]].mean()
            ring = img[(d > les["r_px"] + 1) & (d <= les["r_px"] + 3)].mean()
            # amplitude 0.45 of 255 at the centre; the ring is background plus noise
            sign = 1 if les["polarity"] == "bright" else -1
            assert sign * (core - ring) > 40, (s["study_id"], les)


def test_difficulty_mapping_and_overrides():
    p = LesionParams.from_difficulty(0.5, 112)
    assert (p.amplitude, p.radius_min, p.radius_max) == pytest.approx((0.45, 4.0, 14.0))
    easy, hard = LesionParams.from_difficulty(0.0, 224), LesionParams.from_difficulty(1.0, 112)
    assert (easy.amplitude, easy.radius_min, easy.radius_max) == pytest.approx((0.75, 12.0, 32.0))
    assert (hard.amplitude, hard.radius_min, hard.radius_max) == pytest.approx((0.15, 2.0, 12.0))
    o = LesionParams.from_difficulty(0.5, 112, amplitude=0.6, radius_min=5, radius_max=9)
    assert (o.amplitude, o.radius_min, o.radius_max) == (0.6, 5, 9)


@pytest.mark.parametrize("kwargs,knob", [({"difficulty": 1.5}, "difficulty"), ({"amplitude": 0.0}, "amplitude"),
                                         ({"radius_min": 0.5}, "radius_min"),
                                         ({"radius_min": 9, "radius_max": 6}, "radius_max"),
                                         ({"radius_max": 30}, "radius_max")])
def test_bad_knobs_name_the_knob(kwargs, knob):
    args = {"difficulty": 0.5, **kwargs}
    with pytest.raises(LesionParamsError, match=knob):
        LesionParams.from_difficulty(args.pop("difficulty"), 112, **args)


def _radii(params: LesionParams, draws: int = 400) -> list[float]:
    everywhere = {"right": (0, 0, 112, 112), "left": (0, 0, 112, 112)}
    return [les["r_px"] for i in range(draws)
            for les in place_lesions(np.random.default_rng(i), 112, everywhere, params)]


def test_radius_levels_are_discrete_evenly_spaced_and_all_used():
    params = LesionParams.from_difficulty(0.35, 112, radius_levels=3)
    assert params.radii() == (4.5, 9.5, 14.5)  # 4.6 .. 14.6 px, quarter-pixel values
    counts = Counter(_radii(params))
    assert set(counts) == set(params.radii())
    assert min(counts.values()) > 0.2 * sum(counts.values())  # drawn uniformly among the levels
    four = LesionParams.from_difficulty(0.5, 112, radius_levels=4)  # 4 .. 14 px
    assert four.radii() == (4.0, 7.25, 10.75, 14.0)
    assert np.diff(four.radii()) == pytest.approx(10 / 3, abs=0.25)


def test_continuous_radii_are_the_default_and_unchanged():
    cont = LesionParams.from_difficulty(0.35, 112)
    assert cont.radius_levels == 0 and cont.radii() == ()
    radii = _radii(cont)
    assert len(set(radii)) > 20 and all(r * 4 == int(r * 4) for r in radii)
    # The same generator state gives the same lesions as before the knob existed: one uniform draw.
    rng = np.random.default_rng(7)
    assert cont.draw_radius(rng) == round(float(np.random.default_rng(7).uniform(cont.radius_min, cont.radius_max)) * 4) / 4


def test_demo_levels_are_far_apart_in_mm_on_every_base():
    from medpo_ray.config import load_config
    from medpo_ray.data.dicom_sources import BASES, resized_base
    from medpo_ray.data.synth import _MARGIN

    d = load_config("configs/demo.yaml").data
    params = LesionParams.from_difficulty(d.difficulty, d.size, d.amplitude, d.radius_min, d.radius_max,
                                          d.radius_levels)
    assert params.radius_levels >= 2
    full = d.size + 2 * round(d.size * _MARGIN)
    for base in BASES:
        # +-2 mm must tell adjacent levels apart with room to spare: gaps well over 4 mm everywhere.
        assert min(params.level_gaps_mm(resized_base(base.name, full)[1])) > 6, base.name


def test_radius_levels_are_deterministic_per_study():
    from medpo_ray.data.synth import generate_study

    params = LesionParams.from_difficulty(0.35, 112, radius_levels=3)
    a = [generate_study(i, 0, 112, params)[0] for i in range(12)]
    b = [generate_study(i, 0, 112, params)[0] for i in range(12)]
    assert [r["image"] for r in a] == [r["image"] for r in b]
    assert {les["r_px"] for r in a for les in r["lesions"]} <= set(params.radii())
    # Diameter follows the level and the base's scale exactly.
    for r in a:
        for les in r["lesions"]:
            assert les["diameter_mm"] == round(2 * les["r_px"] * r["findings"]["mm_per_px"])


@pytest.mark.parametrize("levels", [1, -1, 2.5, True])
def test_bad_radius_levels_name_the_knob(levels):
    with pytest.raises(LesionParamsError, match="radius_levels"):
        LesionParams.from_difficulty(0.5, 112, radius_levels=levels)


def test_too_many_radius_levels_for_the_range_name_the_knob():
    with pytest.raises(LesionParamsError, match="radius_levels"):
        LesionParams.from_difficulty(0.5, 112, radius_min=5, radius_max=5.5, radius_levels=4)
