"""Lesion-aware corruption: region exactness, determinism, the modes' effect, control placement."""
import os
import subprocess
import sys

import numpy as np
import pytest

from medpo_ray.config import CorruptionConfig
from medpo_ray.corruption import MODES, CorruptionError, control_corruption, corrupt_image, rng_for

pytestmark = pytest.mark.unit

H, W = 96, 128
YY, XX = np.mgrid[:H, :W]
BLOB = (30, 40, 5.0)  # cy, cx, sigma of the synthetic lesion


def background(seed=0):
    """Textured gradient (a stand-in for anatomy), float."""
    rng = np.random.default_rng(seed)
    return 70 + 0.5 * XX + 0.3 * YY + rng.normal(0, 4, (H, W))


def scan(seed=0):
    """(uint8 image with one bright blob, the blob's exact mask, the true background)."""
    cy, cx, s = BLOB
    bg = background(seed)
    r2 = (YY - cy) ** 2 + (XX - cx) ** 2
    img = np.clip(np.rint(bg + 110 * np.exp(-r2 / (2 * s * s))), 0, 255).astype(np.uint8)
    return img, r2 <= (3 * s) ** 2, np.clip(np.rint(bg), 0, 255)


def square_dilation(mask, r):
    """Reference: Chebyshev dilation by brute force over all shifts (an upper bound of any disk)."""
    out = np.zeros_like(mask)
    p = np.pad(mask, r)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= p[dy:dy + mask.shape[0], dx:dx + mask.shape[1]]
    return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("channels", [0, 3])
def test_pixels_outside_region_are_bit_identical(mode, channels):
    img, mask, _ = scan()
    if channels:
        img = np.stack([img, img[::-1], 255 - img], axis=-1)
    cfg = CorruptionConfig(dilate_px=3)
    res = corrupt_image(img, mask=mask, mode=mode, key="s1", cfg=cfg)
    assert res.image.shape == img.shape and res.image.dtype == np.uint8
    outside = ~square_dilation(mask, 3)
    assert np.array_equal(res.image[outside], img[outside])
    changed = (res.image != img).reshape(H, W, -1).any(axis=2)
    assert res.note["mode"] == mode and res.note["region"] == "mask"
    assert res.note["pixels_changed"] == changed.sum() > 0.5 * mask.sum()
    assert mask.sum() < res.note["region_pixels"] <= square_dilation(mask, 3).sum()


def test_dilation_is_the_euclidean_disk():
    from medpo_ray.corruption.regions import dilate

    mask = np.zeros((40, 50), dtype=bool)
    mask[[3, 20, 21, 35], [4, 25, 40, 48]] = True
    pts = np.argwhere(mask)
    for r in (1, 2, 5, 9):
        # Reference: every pixel within distance r of a mask pixel, by brute force over all pairs.
        yy, xx = np.mgrid[:40, :50]
        d2 = (yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2
        assert np.array_equal(dilate(mask, r), (d2 <= r * r).any(axis=-1))


def test_boxes_region_and_errors():
    img, _, _ = scan()
    res = corrupt_image(img, boxes=[(10.2, 20.0, 30.0, 25.5)], mode="black", cfg=CorruptionConfig(dilate_px=0))
    assert res.note["region"] == "boxes"
    expected = np.zeros((H, W), dtype=bool)
    expected[20:26, 10:30] = True  # floor/ceil of the box edges
    assert np.array_equal(res.image == 0, expected | (img == 0))
    for boxes, field in [([(5, 5, 2, 9)], "boxes[0]"), ([(500, 500, 600, 600)], "boxes[0]"),
                         ([(1, 2, 3)], "boxes[0]"), ([(1, 1, 5, 5), (0, float("nan"), 3, 3)], "boxes[1]")]:
        with pytest.raises(CorruptionError, match=rf"^{field.replace('[', '.').replace(']', '.')}:"):
            corrupt_image(img, boxes=boxes)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"image": np.zeros((4, 4), np.float32)}, "image"),
    ({"image": np.zeros((4, 4, 7), np.uint8)}, "image"),
    ({"image": np.zeros((0, 4), np.uint8)}, "image"),
    ({"image": np.zeros((4, 4), np.uint8), "mask": np.ones((4, 5))}, "lesion_mask"),
    ({"image": np.zeros((4, 4), np.uint8), "mode": "sharpen"}, "mode"),
])
def test_bad_input_names_the_field(kwargs, field):
    image = kwargs.pop("image")
    with pytest.raises(CorruptionError, match=f"^{field}:"):
        corrupt_image(image, **kwargs)


def test_deterministic_by_key_across_processes():
    img, mask, _ = scan()
    a = corrupt_image(img, mask=mask, mode="noise", key="study7/q3").image
    assert np.array_equal(a, corrupt_image(img.copy(), mask=mask, mode="noise", key="study7/q3").image)
    assert not np.array_equal(a, corrupt_image(img, mask=mask, mode="noise", key="study7/q4").image)
    code = "from medpo_ray.corruption import rng_for; print(rng_for('study7/q3').integers(1 << 62))"
    seen = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert seen == {f"{rng_for('study7/q3').integers(1 << 62)}\n"}


def test_inpaint_removes_the_blob():
    img, mask, truth = scan()
    res = corrupt_image(img, mask=mask, mode="inpaint", key="s1", cfg=CorruptionConfig(dilate_px=2))
    inside = mask
    before = np.abs(img[inside] - truth[inside]).mean()
    after = np.abs(res.image[inside].astype(float) - truth[inside]).mean()
    assert before > 20  # the blob is clearly there
    assert after < 5  # ... and gone: the fill matches the background it hid (texture sigma 4)
    assert abs(res.image[inside].mean() - truth[inside].mean()) < 2


def test_noise_black_blur_do_what_they_say():
    img = np.full((H, W), 128, np.uint8)
    mask = (YY - 48) ** 2 + (XX - 64) ** 2 <= 30 ** 2
    cfg = CorruptionConfig(dilate_px=0)
    diff = corrupt_image(img, mask=mask, mode="noise", key="k", cfg=cfg).image[mask].astype(float) - 128
    assert abs(diff.std() - 45) < 2 and abs(diff.mean()) < 1.5
    assert (corrupt_image(img, mask=mask, mode="black", cfg=cfg).image[mask] == 0).all()
    whole = corrupt_image(img, key="k")
    assert whole.note["region"] == "whole" and whole.note["mode"] == "noise"
    assert abs((whole.image.astype(float) - 128).std() - 12) < 0.5
    # An empty mask is no lesion: the whole-image fallback, not a no-op.
    assert corrupt_image(img, mask=np.zeros((H, W)), key="k").note["region"] == "whole"
    # Blur of a step edge: monotone ramp across the edge inside the region.
    step = np.where(XX < 64, 50, 200).astype(np.uint8)
    out = corrupt_image(step, mask=mask, mode="blur", cfg=CorruptionConfig(dilate_px=0, blur_radius=3)).image
    row = out[48, 40:90].astype(int)
    assert (np.diff(row) >= 0).all() and 50 < out[48, 63] < 200 and 50 < out[48, 64] < 200


def test_box_blur_matches_a_convolution():
    from medpo_ray.corruption.fill import _box1d

    a = np.random.default_rng(1).normal(size=(23, 17, 2)).astype(np.float32)
    r = 4
    padded = np.pad(a, ((r, r), (0, 0), (0, 0)), mode="edge")
    ref = np.stack([padded[i:i + 2 * r + 1].mean(axis=0) for i in range(a.shape[0])])
    np.testing.assert_allclose(_box1d(a, r, 0), ref, atol=1e-5)


def test_control_has_same_area_and_avoids_lesions():
    img, mask, _ = scan()
    cfg = CorruptionConfig(dilate_px=3)
    lesion = corrupt_image(img, mask=mask, key="s1", cfg=cfg)
    for key in ("s1", "s2", "s3"):
        ctrl = control_corruption(img, mask=mask, key=key, cfg=cfg)
        changed = ctrl.image != img
        assert ctrl.note["region"] == "control" and ctrl.note["region_pixels"] == lesion.note["region_pixels"]
        assert not (changed & square_dilation(mask, 3)).any()
        dy, dx = ctrl.note["shift"]
        assert (abs(dy) > 0 or abs(dx) > 0) and changed.sum() > 0
    assert control_corruption(img, mask=mask, key="s1", cfg=cfg).note == \
        control_corruption(img, mask=mask, key="s1", cfg=cfg).note


def test_control_shift_is_exact_on_tight_fits():
    from medpo_ray.corruption.regions import control_shift

    region = np.zeros((10, 20), dtype=bool)
    region[:, :10] = True  # room for exactly one disjoint copy: the right half
    assert control_shift(region, np.random.default_rng(0)) == (0, 10)
    region[:, :11] = True
    assert control_shift(region, np.random.default_rng(0)) is None
    img = np.zeros((10, 20), np.uint8)
    out = control_corruption(img, boxes=[(0, 0, 11, 10)], mode="black", cfg=CorruptionConfig(dilate_px=0))
    assert out.note["region"] == "none" and np.array_equal(out.image, img)
    assert control_corruption(img).note["region"] == "none"


def test_control_shift_matches_brute_force():
    from medpo_ray.corruption.regions import control_shift, dilate

    rng = np.random.default_rng(0)
    for _ in range(25):
        h, w = (int(v) for v in rng.integers(8, 24, 2))
        region = np.zeros((h, w), dtype=bool)
        region[rng.integers(h, size=2), rng.integers(w, size=2)] = True
        region = dilate(region, int(rng.integers(0, 4)))
        ys, xs = np.nonzero(region)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        valid = set()
        for dy in range(-y0, h - y1 + 1):
            for dx in range(-x0, w - x1 + 1):
                moved = np.zeros_like(region)
                moved[y0 + dy:y1 + dy, x0 + dx:x1 + dx] = region[y0:y1, x0:x1]
                if not (moved & region).any():
                    valid.add((dy, dx))
        picks = {control_shift(region, np.random.default_rng(k)) for k in range(5)}
        assert picks == {None} if not valid else picks <= valid
