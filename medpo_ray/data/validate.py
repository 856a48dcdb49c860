"""Checks every record passes before it is used (images decode, text is sane, masks and boxes fit the
image, file paths stay inside the dataset root), and `validate_path`, which runs them over a dataset."""
from __future__ import annotations

import hashlib
import io
import math
import numbers
import time
import warnings
from collections import Counter, OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from medpo_ray.config import DataConfig
from medpo_ray.data.record import BadRecord, Record
from medpo_ray.errors import MedpoError

_DATA_DEFAULTS = DataConfig()


@dataclass(frozen=True)
class Limits:
    """Size limits a record must respect; text limits come from `DataConfig`."""

    max_prompt_chars: int = _DATA_DEFAULTS.max_prompt_chars
    max_target_chars: int = _DATA_DEFAULTS.max_target_chars
    # Decompression-bomb guard, checked from the header before any pixel is decoded. 50 Mpx is far
    # above any chest X-ray (VinDr/MIMIC are <= ~9 Mpx) and below PIL's own 89 Mpx warning.
    max_image_pixels: int = 50_000_000
    # Largest single file a loader reads (image, report, XML, JSON, CSV).
    max_file_bytes: int = 256 * 1024 * 1024

    @classmethod
    def from_config(cls, data: DataConfig) -> Limits:
        """The limits a `DataConfig` asks for."""
        return cls(max_prompt_chars=data.max_prompt_chars, max_target_chars=data.max_target_chars)


class RecordError(MedpoError):
    """One field of one record (or of a whole file) is unusable; becomes a `BadRecord`."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def bad(self, record_id: str, source: str = "") -> BadRecord:
        """The quarantine entry for `record_id`."""
        return BadRecord(record_id=record_id, field=self.field, reason=self.reason, source=source)


def check_text(value: object, field: str, limit: int, limit_name: str) -> str:
    """`value` as clean text, or RecordError: not text, not UTF-8, empty, NUL bytes or over `limit`."""
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as e:
            raise RecordError(field, f"not valid UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    if not isinstance(value, str):
        raise RecordError(field, f"expected text, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        # Lone surrogates: what a lenient (surrogateescape) decode of non-UTF-8 bytes leaves behind.
        raise RecordError(field, f"not valid UTF-8 (undecodable character at offset {e.start})") from None
    if not value.strip():
        raise RecordError(field, "empty")
    if "\x00" in value:
        raise RecordError(field, f"contains a NUL character at offset {value.index(chr(0))}")
    if len(value) > limit:
        raise RecordError(field, f"{len(value):,} characters, over the limit of {limit:,} ({limit_name})")
    return value


# VQA datasets hold one image per question (SLAKE: ~20 questions per image); remembering recent
# outcomes by content digest avoids decoding it again without keeping the bytes alive.
_DECODED: OrderedDict[tuple[bytes, int], tuple[int, int] | str] = OrderedDict()
_DECODED_MAX = 4096


def _decode(data: bytes, max_pixels: int) -> tuple[int, int] | str:
    """(width, height) of encoded image bytes, or the reason they do not decode (memoised)."""
    key = (hashlib.blake2b(data, digest_size=16).digest(), max_pixels)
    if key in _DECODED:
        _DECODED.move_to_end(key)
        return _DECODED[key]
    result = _decode_uncached(data, max_pixels)
    _DECODED[key] = result
    if len(_DECODED) > _DECODED_MAX:
        _DECODED.popitem(last=False)
    return result


def _decode_uncached(data: bytes, max_pixels: int) -> tuple[int, int] | str:
    fmt = "image"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt, (w, h) = im.format or "image", im.size
                if w * h > max_pixels:
                    return (f"{w}x{h} {fmt} has {w * h:,} pixels, over the limit of {max_pixels:,} "
                            "(decompression-bomb guard)")
                im.verify()
            # verify() checks structure only; load() decodes every pixel (catches truncated JPEGs).
            with Image.open(io.BytesIO(data)) as im:
                im.load()
    except UnidentifiedImageError:
        return f"not a recognised image format (first bytes: {data[:8].hex(' ')})"
    except Image.DecompressionBombError as e:
        return f"{fmt} too large to decode safely (decompression-bomb guard: {e})"
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        kind = "truncated" if "truncated" in str(e).lower() else "corrupt"
        return f"{kind} {fmt} (cannot decode: {e})"
    if w <= 0 or h <= 0:
        return f"{fmt} has an empty size {w}x{h}"
    return w, h


def check_image(data: object, field: str = "image", max_pixels: int = Limits.max_image_pixels) -> tuple[int, int]:
    """(width, height) of fully decodable encoded image bytes, or RecordError naming `field`."""
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise RecordError(field, f"expected encoded image bytes, got {type(data).__name__}")
    if not data:
        raise RecordError(field, "empty (0 bytes)")
    result = _decode(data, max_pixels)
    if isinstance(result, str):
        raise RecordError(field, result)
    return result


def check_boxes(boxes: object, width: int, height: int) -> None:
    """RecordError unless every box is (x0, y0, x1, y1), finite, non-empty and inside the image (±1 px)."""
    if not isinstance(boxes, (tuple, list)):
        raise RecordError("boxes", f"expected a list of (x0, y0, x1, y1), got {type(boxes).__name__}")
    for i, box in enumerate(boxes):
        where = f"boxes[{i}]"
        if not isinstance(box, (tuple, list)) or len(box) != 4:
            raise RecordError(where, f"expected 4 numbers (x0, y0, x1, y1), got {box!r}")
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in box):
            raise RecordError(where, f"non-numeric or non-finite coordinate in {box!r}")
        x0, y0, x1, y1 = box
        if x1 <= x0 or y1 <= y0:
            raise RecordError(where, f"empty box {tuple(box)} (needs x0 < x1 and y0 < y1)")
        if x0 < -1 or y0 < -1 or x1 > width + 1 or y1 > height + 1:
            raise RecordError(where, f"box {tuple(box)} lies outside the {width}x{height} image")


def inside_root(root: Path, relative: str | Path, field: str) -> Path:
    """`root / relative` with symlinks resolved, or RecordError if it escapes `root`."""
    root = Path(root).resolve()
    try:
        target = (root / relative).resolve()
    except (OSError, ValueError) as e:  # NUL bytes, symlink loops
        raise RecordError(field, f"path {str(relative)!r} cannot be resolved ({e})") from None
    if not target.is_relative_to(root):
        raise RecordError(field, f"path {str(relative)!r} escapes the dataset root {str(root)!r}")
    return target


def check_record(record: Record, root: Path | str | None = None, limits: Limits | None = None) -> BadRecord | None:
    """The first problem of `record` as a BadRecord, or None when it is fit to use."""
    limits = limits or Limits()
    rid = record.record_id if isinstance(record.record_id, str) and record.record_id else "<no id>"
    try:
        if rid == "<no id>":
            raise RecordError("record_id", "missing or not a string")
        if record.task not in ("report", "vqa"):
            raise RecordError("task", f"must be 'report' or 'vqa', got {record.task!r}")
        if not isinstance(record.split, str) or not record.split:
            raise RecordError("split", f"must be a non-empty string, got {record.split!r}")
        # Name the fields as the dataset does: a VQA prompt is its question, a report target the report.
        prompt_name, target_name = ("question", "answer") if record.task == "vqa" else ("prompt", "report")
        check_text(record.prompt, prompt_name, limits.max_prompt_chars, "data.max_prompt_chars")
        check_text(record.target, target_name, limits.max_target_chars, "data.max_target_chars")
        if root is not None:
            for key in ("image_path", "mask_path"):
                if isinstance(record.meta.get(key), str):
                    inside_root(Path(root), record.meta[key], key)
        width, height = check_image(record.image, "image", limits.max_image_pixels)
        if record.lesion_mask is not None:
            mw, mh = check_image(record.lesion_mask, "lesion_mask", limits.max_image_pixels)
            if (mw, mh) != (width, height):
                raise RecordError("lesion_mask", f"mask is {mw}x{mh} but the image is {width}x{height}")
        check_boxes(record.boxes, width, height)
    except RecordError as e:
        return e.bad(rid)
    return None


@dataclass
class ValidationReport:
    """What `validate_path` found: good records per (split, task) and every quarantined record."""

    path: str
    kind: str
    counts: Counter = field(default_factory=Counter)
    bad: list[BadRecord] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def good(self) -> int:
        """Number of records that passed."""
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line: good and bad totals, bad ones by field."""
        by_field = Counter(b.field.split("[")[0] for b in self.bad)
        fields = ", ".join(f"{k}: {v}" for k, v in sorted(by_field.items()))
        return (f"{self.good} good, {len(self.bad)} bad" + (f" ({fields})" if fields else "")
                + f" in {self.seconds:.1f} s")

    def to_json(self) -> dict:
        """A JSON-ready dict of the whole report."""
        return {
            "path": self.path, "kind": self.kind, "good": self.good, "bad": len(self.bad),
            "counts": [{"split": s, "task": t, "records": n} for (s, t), n in sorted(self.counts.items())],
            "bad_records": [{"record_id": b.record_id, "field": b.field, "reason": b.reason, "source": b.source}
                            for b in self.bad],
            "seconds": round(self.seconds, 3),
        }


def validate_path(path: str | Path, kind: str | None = None, split: str | None = None,
                  limits: Limits | None = None, progress: bool = False) -> ValidationReport:
    """Run every check over the dataset at `path` (kind auto-detected when None), keeping only counts."""
    from medpo_ray.data.sources import detect_kind, open_source

    kind = kind or detect_kind(path)
    source = open_source(kind, path, split=split, limits=limits)
    report = ValidationReport(path=str(path), kind=kind)
    start = time.perf_counter()
    items = iter(source)
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc=f"validate {kind}", unit=" rec", mininterval=2.0)
    for item in items:
        if isinstance(item, Record):
            report.counts[(item.split, item.task)] += 1
        else:
            report.bad.append(item if item.source else replace(item, source=kind))
    report.seconds = time.perf_counter() - start
    return report
