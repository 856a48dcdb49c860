"""Real base slices for the embedded dataset, read offline from the DICOM test files shipped in the
`pydicom` and `pydicom-data` wheels (shared/design/DATA.md).

Each base is normalised once: decoded, put in the radiological display orientation (anterior or
superior at the top, patient right on the image left), inverted when MONOCHROME1, cropped to a
centred square and windowed to [0, 1] by percentiles. Lesion placement regions are boxes in that
normalised square, one per patient side, so "right" always lies in the image's left half.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from medpo_ray.errors import MedpoError

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) as fractions of the square's width/height


class BaseImageError(MedpoError):
    """A base DICOM file is missing or cannot be decoded (broken pydicom / pydicom-data install)."""


@dataclass(frozen=True)
class BaseSpec:
    """One real slice and everything the generator needs to know about it."""

    name: str
    filename: str
    package: str  # the wheel that ships the file
    modality: str  # display name used in reports and VQA answers
    body_part: str
    noun: str  # the lesion noun of the report grammar
    region: str  # the region noun that follows the side word: "the right <region>"
    license: str
    # mm per pixel of the stored image, when the file's PixelSpacing is absent or zero.
    fallback_spacing_mm: float
    percentiles: tuple[float, float]
    regions: dict[str, Box]  # patient side -> placement box for lesion centres, in the crop
    crop: Box | None = None  # square crop of the oriented slice (fractions); None: centred square


# Region boxes were drawn on the normalised squares (see `medpo-ray data synth --preview`); they keep
# lesion centres inside the named anatomy and at least 8% of the width away from the midline.
BASES: tuple[BaseSpec, ...] = (
    BaseSpec(
        name="cxr_pa", filename="RG1_UNCI.dcm", package="pydicom-data", modality="X-ray",
        body_part="chest", noun="nodule", region="lung",
        license="MIT (pydicom-data 1.0.0); image from the NEMA WG04 DICOM sample set (RG1)",
        fallback_spacing_mm=0.19, percentiles=(1.0, 99.0),
        regions={"right": (0.14, 0.14, 0.40, 0.62), "left": (0.60, 0.14, 0.84, 0.55)},
    ),
    BaseSpec(
        name="ct_chest", filename="CT_small.dcm", package="pydicom", modality="CT",
        body_part="chest", noun="lesion", region="paraspinal region",
        license="MIT (pydicom 3.0); downsized from the NEMA WG04 DICOM sample set (CT1_UNC)",
        fallback_spacing_mm=0.66, percentiles=(2.0, 99.5),
        regions={"right": (0.10, 0.55, 0.36, 0.85), "left": (0.64, 0.55, 0.90, 0.85)},
    ),
    BaseSpec(
        name="ct_abdomen", filename="explicit_VR-UN.dcm", package="pydicom-data", modality="CT",
        body_part="abdomen", noun="lesion", region="hemiabdomen",
        license="MIT (pydicom-data 1.0.0); image from the TCIA Pancreas-CT collection (CC BY 3.0), "
                "attribution: Roth HR et al., The Cancer Imaging Archive",
        fallback_spacing_mm=0.86, percentiles=(45.0, 98.0),
        regions={"right": (0.12, 0.22, 0.40, 0.58), "left": (0.60, 0.22, 0.88, 0.58)},
        crop=(0.18, 0.23, 0.82, 0.87),  # the body only: the table and the air around it carry nothing
    ),
    BaseSpec(
        name="mr_shoulder", filename="MR2_UNCR.dcm", package="pydicom-data", modality="MRI",
        body_part="shoulder", noun="lesion", region="hemifield",
        license="MIT (pydicom-data 1.0.0); image from the NEMA WG04 DICOM sample set (MR2)",
        fallback_spacing_mm=0.195, percentiles=(1.0, 99.5),
        regions={"right": (0.14, 0.30, 0.40, 0.80), "left": (0.60, 0.30, 0.86, 0.80)},
    ),
)
BASES_BY_NAME = {b.name: b for b in BASES}


@dataclass(frozen=True)
class BaseImage:
    """A normalised base: a float32 square in [0, 1] and its physical pixel size."""

    spec: BaseSpec
    pixels: np.ndarray
    spacing_mm: float


def orientation_flips(iop: list[float] | None) -> tuple[bool, bool]:
    """(flip_rows, flip_cols) that bring a slice into display orientation from ImageOrientationPatient.

    Rows should run anterior->posterior (axial) or superior->inferior (coronal/sagittal); columns
    should run patient right->left (axial/coronal) or anterior->posterior (sagittal). Without IOP
    (projection radiographs) nothing is flipped: a chest film is never mirrored, its heart side is
    the laterality ground truth.
    """
    if not iop or len(iop) != 6:
        return False, False
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    r_axis, c_axis = int(np.argmax(np.abs(row))), int(np.argmax(np.abs(col)))
    flip_cols = row[r_axis] < 0  # LPS: +x is patient left, +y posterior: both wanted rightwards
    # Downwards we want +y (posterior) on axial slices and -z (inferior) on the others.
    flip_rows = col[c_axis] < 0 if c_axis in (0, 1) else col[c_axis] > 0
    return bool(flip_rows), bool(flip_cols)


def _read_dicom(spec: BaseSpec):
    import pydicom
    from pydicom.data import get_testdata_file

    # download=False: the file must come from an installed wheel, never from the network.
    path = get_testdata_file(spec.filename, download=False)
    if path is None:
        raise BaseImageError(f"base image {spec.name}: {spec.filename} not found; is the "
                             f"{spec.package!r} package installed?")
    try:
        return pydicom.dcmread(path)
    except Exception as e:  # any decoder failure is an install problem, reported as such
        raise BaseImageError(f"base image {spec.name}: cannot read {path}: {e}") from None


def _square_crop(a: np.ndarray, crop: Box | None) -> np.ndarray:
    h, w = a.shape
    if crop is None:
        s = min(h, w)
        y0, x0 = (h - s) // 2, (w - s) // 2
    else:
        x0, y0 = round(crop[0] * w), round(crop[1] * h)
        s = min(round((crop[2] - crop[0]) * w), round((crop[3] - crop[1]) * h))
    return a[y0:y0 + s, x0:x0 + s]


@cache
def load_base(name: str) -> BaseImage:
    """Decode, orient, invert, square-crop and window one base slice (cached per process)."""
    spec = BASES_BY_NAME[name]
    ds = _read_dicom(spec)
    try:
        a = ds.pixel_array.astype(np.float32)
    except Exception as e:
        raise BaseImageError(f"base image {spec.name}: cannot decode pixels of {spec.filename}: {e}") from None
    if a.ndim != 2:
        raise BaseImageError(f"base image {spec.name}: expected one 2-D frame, got shape {a.shape}")
    flip_rows, flip_cols = orientation_flips(list(ds.get("ImageOrientationPatient") or []))
    if flip_rows:
        a = a[::-1]
    if flip_cols:
        a = a[:, ::-1]
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        a = a.max() - a
    a = _square_crop(a, spec.crop)
    lo, hi = np.percentile(a, spec.percentiles)
    a = np.clip((a - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)
    spacing = [float(v) for v in (ds.get("PixelSpacing") or [])]
    mm = spacing[0] if spacing and spacing[0] > 0 else spec.fallback_spacing_mm
    return BaseImage(spec=spec, pixels=np.ascontiguousarray(a), spacing_mm=mm)


def resized_base(name: str, px: int) -> tuple[np.ndarray, float]:
    """The base resampled to px x px (float32 in [0, 1]) and its mm per pixel at that size."""
    return _resized(name, px)


@cache
def _resized(name: str, px: int) -> tuple[np.ndarray, float]:
    from PIL import Image

    base = load_base(name)
    src = base.pixels.shape[0]
    # Area averaging when shrinking (no aliasing of fine texture), bilinear when enlarging.
    resample = Image.Resampling.BOX if px < src else Image.Resampling.BILINEAR
    img = Image.fromarray(base.pixels).resize((px, px), resample)
    out = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
    out.flags.writeable = False  # shared between studies through the cache
    return out, base.spacing_mm * src / px
