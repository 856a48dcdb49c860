"""Box CSVs: VinDr-CXR (image_id, rad_id, class_name, x_min, y_min, x_max, y_max; one row per box,
'No finding' rows without coordinates; DICOM or PNG images named by image_id) and MS-CXR
(dicom_id, category_name, label_text, path, x, y, w, h, image_width, image_height[, split])."""
from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

from PIL import Image

from medpo_ray.data.record import BadRecord, Record
from medpo_ray.data.sources.base import RecordSource
from medpo_ray.data.sources.files import canonical_split, image_bytes, index_files, read_csv
from medpo_ray.data.sources.iu_xray import snake
from medpo_ray.data.validate import RecordError, inside_root

VINDR = ("image_id", "class_name", "x_min", "y_min", "x_max", "y_max")
MS_CXR = ("dicom_id", "label_text", "x", "y", "w", "h")
VINDR_PROMPT = "List the abnormal findings on this chest X-ray."
MS_CXR_PROMPT = "Describe the main finding on this chest X-ray."
_NO_FINDING = "no finding"


def _header(csv_path: Path) -> list[str]:
    try:
        with open(csv_path, "rb") as f:
            first = f.readline(65536).decode("utf-8-sig", "replace")
    except OSError:
        return []  # unreadable: not detected here; read_csv names the problem when it is opened
    return [h.strip() for h in first.strip().split(",")]


def _number(row: dict[str, str], column: str, where: str) -> float:
    try:
        value = float(row[column])
    except ValueError:
        raise RecordError(column, f"{where}: {row[column]!r} is not a number") from None
    if not math.isfinite(value):
        raise RecordError(column, f"{where}: {row[column]!r} is not finite")
    return value


class BoxCSVSource(RecordSource):
    """One report record per VinDr image (target: its findings, deduplicated across radiologists;
    boxes from all of them) or per MS-CXR phrase (target: the phrase; boxes: its boxes). Boxes are
    rescaled when MS-CXR's image_width/height differ from the image found (resized JPGs)."""

    kind = "box_csv"

    @classmethod
    def detect(cls, path: Path) -> bool:
        """A CSV, or a folder (or its annotations/) with one, carrying VinDr or MS-CXR box columns."""
        return bool(cls._csv_files(path))

    @staticmethod
    def _csv_files(path: Path) -> list[Path]:
        candidates = [path] if path.is_file() else sorted([*path.glob("*.csv"), *path.glob("annotations/*.csv")])
        return [p for p in candidates if p.suffix == ".csv" and (set(VINDR) <= set(_header(p)) or set(MS_CXR) <= set(_header(p)))]

    @property
    def root(self) -> Path:
        """The folder holding the CSV, or its parent for VinDr's annotations/ folder."""
        folder = self.path if self.path.is_dir() else self.path.parent
        return folder.parent if folder.name == "annotations" else folder

    @cached_property
    def _images(self) -> dict[str, Path]:
        return index_files(self.root)

    def _iter_raw(self) -> Iterator[Record | BadRecord]:
        files = [self.path] if self.path.is_file() else self._csv_files(self.path)
        if not files:
            yield BadRecord(str(self.path), "file", "no VinDr-CXR or MS-CXR box CSV found")
        for file in files:
            try:
                header, rows = read_csv(file, self.limits)
            except RecordError as e:
                yield e.bad(file.name)
                continue
            flavour = VINDR if set(VINDR) <= set(header) else MS_CXR if set(MS_CXR) <= set(header) else None
            if flavour is None:
                near = VINDR if len(set(VINDR) & set(header)) >= len(set(MS_CXR) & set(header)) else MS_CXR
                for column in (c for c in near if c not in header):
                    yield BadRecord(file.name, column, f"missing column {column!r} (file has: {', '.join(header)})")
                continue
            groups: dict[tuple[str, ...], list[tuple[int, dict[str, str]]]] = {}
            for line, cells in enumerate(rows, start=2):
                if len(cells) != len(header):
                    yield BadRecord(f"{file.name}:{line}", "row", f"{len(cells)} cells, the header has {len(header)}")
                    continue
                row = {h: c.strip() for h, c in zip(header, cells, strict=True)}
                key = (row["image_id"],) if flavour is VINDR else (row["dicom_id"], row["label_text"])
                groups.setdefault(key, []).append((line, row))
            build = self._vindr if flavour is VINDR else self._ms_cxr
            split = next((s for part in file.stem.split("_") if (s := canonical_split(part))), "train")
            for key, group in groups.items():
                row_split = group[0][1].get("split") or split
                if self.wants(canonical_split(row_split) or row_split):
                    yield build(key, group, file.name, split)

    def _vindr(self, key: tuple[str, ...], group: list, file: str, split: str) -> Record | BadRecord:
        (image_id,) = key
        try:
            boxes, classes = [], []
            for line, row in group:
                if row["class_name"].lower() == _NO_FINDING:
                    continue
                classes.append(row["class_name"])
                boxes.append(tuple(_number(row, c, f"{file} line {line}") for c in ("x_min", "y_min", "x_max", "y_max")))
            image_path = self._find(image_id, None)
            image = image_bytes(image_path, "image", self.limits)
        except RecordError as e:
            return e.bad(image_id)
        names = list(dict.fromkeys(classes))
        target = ("Findings: " + ", ".join(names) + ".") if names else "No finding."
        return Record(
            record_id=image_id, task="report", image=image, prompt=VINDR_PROMPT, target=target,
            study_id=image_id, split=split, boxes=tuple(boxes),
            findings={snake(n): {"present": True, "side": None, "severity": None} for n in names},
            meta={"box_labels": classes, "rad_ids": sorted({r.get("rad_id", "") for _, r in group} - {""}),
                  "image_path": str(image_path.relative_to(self.root.resolve())), "file": file})

    def _ms_cxr(self, key: tuple[str, ...], group: list, file: str, split: str) -> Record | BadRecord:
        dicom_id, phrase = key
        record_id = f"{dicom_id}/{hashlib.sha1(phrase.encode()).hexdigest()[:8]}"
        first = group[0][1]
        try:
            xywh = [tuple(_number(row, c, f"{file} line {line}") for c in ("x", "y", "w", "h")) for line, row in group]
            image_path = self._find(dicom_id, first.get("path") or None)
            image = image_bytes(image_path, "image", self.limits)
            scale = self._scale(image, first, f"{file} line {group[0][0]}")
        except RecordError as e:
            return e.bad(record_id)
        category = first.get("category_name", "")
        raw_split = first.get("split") or split
        return Record(
            record_id=record_id, task="report", image=image, prompt=MS_CXR_PROMPT, target=phrase,
            study_id=first.get("study_id") or dicom_id, split=canonical_split(raw_split) or raw_split,
            boxes=tuple((x * scale[0], y * scale[1], (x + w) * scale[0], (y + h) * scale[1]) for x, y, w, h in xywh),
            findings={snake(category): {"present": True, "side": None, "severity": None}} if category else None,
            meta={"category": category, "dicom_id": dicom_id, "file": file,
                  "image_path": str(image_path.relative_to(self.root.resolve()))})

    def _find(self, image_id: str, relative: str | None) -> Path:
        """The image named by a CSV path column (kept inside the root), else found by id under the root."""
        if relative:
            path = inside_root(self.root, relative, "path")
            if path.is_file():
                return path
        found = self._images.get(image_id.lower())
        if found is None:
            raise RecordError("image", f"no image named {image_id!r} (.png/.jpg/.dcm/.dicom) under the root"
                              + (f" and {relative!r} does not exist" if relative else ""))
        return inside_root(self.root, found.relative_to(self.root), "image")

    @staticmethod
    def _scale(image: bytes, row: dict[str, str], where: str) -> tuple[float, float]:
        """Factors from the CSV's image_width/height to the image's own size (1, 1 when absent)."""
        if not row.get("image_width") or not row.get("image_height"):
            return 1.0, 1.0
        width, height = _number(row, "image_width", where), _number(row, "image_height", where)
        if width <= 0 or height <= 0:
            raise RecordError("image_width", f"{where}: size {width}x{height} is not positive")
        try:
            with Image.open(io.BytesIO(image)) as im:  # header only; check_record decodes fully
                actual = im.size
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return 1.0, 1.0  # undecodable: check_record reports it with the reason
        return actual[0] / width, actual[1] / height
