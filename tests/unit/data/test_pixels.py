"""16-bit greyscale (the usual PNG export of DICOM pixel data) is scaled into 8 bits, not clipped to white,
the same way by every reader: the model's image loader and the corruption stage."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from medpo_ray.corruption.codec import decode_image
from medpo_ray.data.pixels import to_8bit
from medpo_ray.models.inputs import open_image

pytestmark = pytest.mark.unit


def _png16(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_16_bit_ct_slice_keeps_its_structure():
    # A CT-like slice: air 0, soft tissue ~1000-1100, a lesion at 1400, bone 3000 (12-bit values in 16 bits).
    a = np.full((32, 32), 1000, np.uint16)
    a[:, :4] = 0
    a[10:14, 10:14] = 1400
    a[20:, 20:] = 3000
    data = _png16(a)
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    rgb = np.asarray(open_image(data, "ct"))
    grey = decode_image(data)
    assert rgb.shape == (32, 32, 3) and np.array_equal(rgb[..., 0], grey)  # both readers see the same view
    # Before: everything above 255 became white (tissue, lesion and bone alike).
    assert grey[0, 0] == 0 and grey[25, 25] == 255 and len(np.unique(grey)) == 4
    assert grey[5, 8] < grey[11, 11] < grey[25, 25]  # tissue < lesion < bone: the lesion is visible
    assert np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[5, 8, 0] == 255  # the old clipping


def test_eight_bit_images_are_unchanged_and_flat_ones_do_not_divide_by_zero():
    img = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8))
    assert to_8bit(img) is img
    flat = to_8bit(Image.fromarray(np.full((4, 4), 500, np.int32), mode="I"))
    assert flat.mode == "L" and not np.asarray(flat).any()
