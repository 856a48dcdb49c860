"""File helpers the dataset adapters share: bounded reads, text decoding, image lookup by name,
DICOM to PNG, and one spelling for split names."""
from __future__ import annotations

import csv
import gzip
import io
import os
from collections.abc import Iterator
from pathlib import Path

from medpo_ray.data.validate import Limits, RecordError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
           "validation": "val", "dev": "val", "test": "test", "testing": "test"}


def canonical_split(name: str) -> str | None:
    """'train', 'val' or 'test' for the usual spellings (validate, validation, dev, ...), else None."""
    return _SPLITS.get(name.strip().lower())


def hashed_split(key: str, val: float = 0.1, test: float = 0.2) -> str:
    """A fixed split for a dataset without an official one (IU-Xray): 'val' or 'test' for those shares of
    keys by a stable hash, else 'train' (70/10/20 by default, the proportions R2Gen used on IU-Xray)."""
    import hashlib

    u = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    return "test" if u < test else "val" if u < test + val else "train"


def read_bytes(path: Path, field: str, limits: Limits) -> bytes:
    """The bytes of `path`, or RecordError when it is missing, not a file, unreadable or too large."""
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise RecordError(field, f"{path.name!r} is not a regular file")
        if size > limits.max_file_bytes:
            raise RecordError(field, f"{path.name!r} is {size:,} bytes, over the limit of {limits.max_file_bytes:,}")
        return path.read_bytes()
    except FileNotFoundError:
        raise RecordError(field, f"file not found: {str(path)!r}") from None
    except OSError as e:
        raise RecordError(field, f"cannot read {str(path)!r}: {e.strerror or e}") from None


def decode_text(value: object, field: str) -> str:
    """`value` (str, or bytes that must be UTF-8) as str; RecordError for null, bad bytes or other types."""
    if value is None:
        raise RecordError(field, "missing (null)")
    if isinstance(value, RecordError):
        raise value
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as e:
            raise RecordError(field, f"not valid UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    if not isinstance(value, str):
        raise RecordError(field, f"expected text, got {type(value).__name__} {value!r:.40}")
    return value


def index_files(root: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> dict[str, Path]:
    """Files under `root` by lower-cased stem (first in sorted order wins); symlinked dirs not followed."""
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            stem, suffix = os.path.splitext(name)
            if suffix.lower() in suffixes:
                found.setdefault(stem.lower(), Path(dirpath) / name)
    return found


def is_dicom(data: bytes) -> bool:
    """True for a DICOM Part-10 file (128-byte preamble then 'DICM')."""
    return data[128:132] == b"DICM"


def dicom_to_png(data: bytes, field: str = "image", max_pixels: int = Limits.max_image_pixels) -> bytes:
    """An 8-bit greyscale PNG of a DICOM image: VOI LUT (window) applied, MONOCHROME1 inverted, first frame."""
    import numpy as np
    import pydicom
    from PIL import Image
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        if rows * columns > max_pixels:  # before decoding: compressed pixel data can be a bomb
            raise RecordError(field, f"{columns}x{rows} DICOM has {rows * columns:,} pixels, over the limit "
                                     f"of {max_pixels:,} (decompression-bomb guard)")
        pixels = ds.pixel_array
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            pixels = pixels[0]
        if ds.get("SamplesPerPixel", 1) != 1:
            raise RecordError(field, f"DICOM has {ds.SamplesPerPixel} samples per pixel; expected greyscale")
        values = apply_voi_lut(apply_modality_lut(pixels, ds), ds).astype(np.float64)
    except RecordError:
        raise
    # pydicom signals malformed or unsupported data through many exception types (missing tags,
    # no pixel handler for the transfer syntax, short pixel data): all mean "this image is unusable".
    except Exception as e:  # noqa: BLE001
        raise RecordError(field, f"DICOM cannot be decoded ({type(e).__name__}: {e})") from None
    lo, hi = float(values.min()), float(values.max())
    scaled = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    if ds.get("PhotometricInterpretation", "") == "MONOCHROME1":
        scaled = 1.0 - scaled  # MONOCHROME1 stores bright bone as low values
    out = io.BytesIO()
    Image.fromarray(np.round(scaled * 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def image_bytes(path: Path, field: str, limits: Limits) -> bytes:
    """Encoded image bytes of `path` as stored, DICOM converted to PNG."""
    data = read_bytes(path, field, limits)
    return dicom_to_png(data, field, limits.max_image_pixels) if is_dicom(data) else data


def read_csv(path: Path, limits: Limits) -> tuple[list[str], Iterator[list[str]]]:
    """(header, rows) of a UTF-8 CSV, gzip-compressed when it ends in .gz; RecordError naming the file.

    Rows are produced lazily (MIMIC's metadata CSV has 377k); a malformed row raises csv.Error then.
    """
    name = path.name
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read(limits.max_file_bytes + 1)
            if len(data) > limits.max_file_bytes:
                raise RecordError("file", f"{name} decompresses to more than {limits.max_file_bytes:,} bytes")
        else:
            data = read_bytes(path, "file", limits)
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise RecordError("file", f"{name} is not valid UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    except (OSError, EOFError) as e:
        raise RecordError("file", f"cannot read {name}: {e}") from None
    rows = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(rows)
    except (csv.Error, StopIteration) as e:
        raise RecordError("file", f"{name} has no valid header row ({e or 'empty file'})") from None
    return [h.strip() for h in header], rows


def _utf8(name: str, value: bytes | None) -> str | RecordError | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as e:
        return RecordError(name, f"not valid UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})")


def _column_values(name: str, column) -> list:
    import pyarrow as pa

    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return [_utf8(name, v) for v in column.cast(pa.large_binary()).to_pylist()]
    try:
        return column.to_pylist()
    except UnicodeDecodeError:  # non-UTF-8 text nested in a struct or list: find the rows it is in
        values = []
        for i in range(len(column)):
            try:
                values.append(column.slice(i, 1).to_pylist()[0])
            except UnicodeDecodeError as e:
                values.append(RecordError(name, f"text inside is not valid UTF-8 (byte 0x{e.object[e.start]:02x})"))
        return values


def batch_rows(batch) -> list[dict]:
    """Rows of a pyarrow RecordBatch as dicts, like `to_pylist()`, except that a value holding
    non-UTF-8 text arrives as the RecordError describing it (`decode_text` raises it).

    A writer that skipped UTF-8 validation must cost one row, not the batch: pyarrow's own
    conversion raises on the first bad value and loses every row after it.
    """
    columns = {name: _column_values(name, column) for name, column in zip(batch.schema.names, batch.columns, strict=True)}
    return [{name: values[i] for name, values in columns.items()} for i in range(batch.num_rows)]
