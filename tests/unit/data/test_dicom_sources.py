"""Base slices: decoded from the installed wheels, oriented by the DICOM header, never mirrored."""
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medpo_ray.data.dicom_sources import BASES, load_base, orientation_flips, resized_base

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("iop,expected", [
    (None, (False, False)),  # projection radiograph: no orientation, never flipped
    ([1, 0, 0, 0, 1, 0], (False, False)),  # axial, standard
    ([1, 0, 0, 0, -1, 0], (True, False)),  # axial stored upside down (the TCIA abdomen)
    ([-1, 0, 0, 0, 1, 0], (False, True)),  # axial mirrored
    ([1, 0, 0, 0, 0, -1], (False, False)),  # coronal, standard
    ([0.569486, 0.822001, 0, 0, 0, -1], (False, False)),  # the oblique MR shoulder
    ([0, 1, 0, 0, 0, 1], (True, False)),  # sagittal upside down
])
def test_orientation_flips(iop, expected):
    assert orientation_flips(iop) == expected


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _raw_square(filename: str) -> np.ndarray:
    a = pydicom.dcmread(get_testdata_file(filename, download=False)).pixel_array.astype(np.float32)
    h, w = a.shape
    s = min(h, w)
    return a[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]


def test_chest_film_is_inverted_and_not_mirrored():
    base = load_base("cxr_pa")
    raw = _raw_square("RG1_UNCI.dcm")  # MONOCHROME1: high values are dark
    assert _corr(base.pixels, -raw) > 0.95
    assert _corr(base.pixels, -raw) > _corr(base.pixels, -raw[:, ::-1]) + 0.1


def test_abdomen_ct_is_turned_right_way_up():
    spec = next(b for b in BASES if b.name == "ct_abdomen")
    raw = pydicom.dcmread(get_testdata_file(spec.filename, download=False)).pixel_array.astype(np.float32)
    n = raw.shape[0]
    x0, y0, x1, _ = (round(v * n) for v in spec.crop)
    s = x1 - x0
    # Compared in a standard soft-tissue window (HU -100..300), not the generator's percentiles.
    upright = np.clip(raw[::-1][y0:y0 + s, x0:x0 + s], -100, 300)
    stored = np.clip(raw[y0:y0 + s, x0:x0 + s], -100, 300)
    base = load_base("ct_abdomen").pixels
    assert _corr(base, upright) > 0.95
    assert _corr(base, upright) > _corr(base, stored) + 0.3


@pytest.mark.parametrize("spec", BASES, ids=lambda b: b.name)
def test_every_base_is_a_windowed_square_with_spacing_and_licence(spec):
    base = load_base(spec.name)
    h, w = base.pixels.shape
    assert h == w >= 112
    assert base.pixels.min() == 0.0 and base.pixels.max() == 1.0
    assert 0.1 < base.spacing_mm < 1.0
    assert "MIT" in spec.license
    for side, (x0, y0, x1, y1) in spec.regions.items():
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        # patient right is the image's left half
        assert (x1 <= 0.5) if side == "right" else (x0 >= 0.5)
    px, mm = resized_base(spec.name, 120)
    assert px.shape == (120, 120) and mm == pytest.approx(base.spacing_mm * h / 120)
