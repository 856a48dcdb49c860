"""MIMIC-CXR style: free-text reports files/p10/p10000032/s50414267.txt, the study's images in
files/p10/p10000032/s50414267/*.jpg (or .dcm), and at the root the CheXpert label CSV
(mimic-cxr-2.0.0-chexpert.csv[.gz]) plus, when present, the split and metadata CSVs."""
from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

from medpo_ray.data.record import BadRecord, Record
from medpo_ray.data.reports import REPORT_PROMPT
from medpo_ray.data.sources.base import RecordSource
from medpo_ray.data.sources.files import IMAGE_SUFFIXES, canonical_split, image_bytes, read_bytes, read_csv
from medpo_ray.data.sources.iu_xray import report_text, snake
from medpo_ray.data.validate import RecordError, inside_root

CHEXPERT_COLUMNS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
)
_LABEL_VALUES = {1.0: True, 0.0: False, -1.0: None}  # positive, negative, uncertain; blank = not mentioned
_SECTION = re.compile(r"^[ \t]*([A-Z][A-Z ,/&()-]*?)[ \t]*:", re.M)
_VIEW_ORDER = {"PA": 0, "AP": 1}


def report_sections(text: str) -> dict[str, str]:
    """Upper-case section name -> whitespace-normalised text, for headers like ' FINDINGS: ...'."""
    heads = list(_SECTION.finditer(text))
    out = {}
    for head, nxt in zip(heads, [*heads[1:], None], strict=True):
        body = " ".join(text[head.end(): nxt.start() if nxt else len(text)].split())
        if body:
            out[head.group(1).strip()] = body
    return out


def chexpert_findings(values: dict[str, str]) -> dict[str, dict]:
    """CheXpert cells (1 / 0 / -1 / blank) -> {finding: {present, side, severity}}; RecordError on others."""
    findings = {}
    for column, raw in values.items():
        raw = raw.strip()
        if not raw:
            continue
        try:
            present = _LABEL_VALUES[float(raw)]
        except (ValueError, KeyError):
            raise RecordError(f"chexpert.{column}", f"value {raw!r} is not 1, 0, -1 or blank") from None
        findings[snake(column)] = {"present": present, "side": None, "severity": None}
    return findings


class MimicCXRSource(RecordSource):
    """Report records, one per study report, with CheXpert labels as findings (present None =
    uncertain) and the study's PA image (else AP, else the first) when the metadata CSV says which."""

    kind = "mimic_cxr"

    @classmethod
    def detect(cls, path: Path) -> bool:
        """A folder holding at least one files/p*/p*/s*.txt report."""
        return path.is_dir() and next(path.glob("files/p*/p*/s*.txt"), None) is not None

    @cached_property
    def _tables(self) -> tuple[dict[str, dict[str, str]], dict[str, str], dict[str, str], list[BadRecord]]:
        """(CheXpert cells by study, split by study, view by dicom id, file-level problems)."""
        bad: list[BadRecord] = []
        if next(self.root.glob("*chexpert*.csv*"), None) is None:
            bad.append(BadRecord(str(self.root), "file", "no CheXpert label CSV (*chexpert*.csv[.gz]) at the root"))
        labels = self._table("*chexpert*.csv*", "study_id", (), CHEXPERT_COLUMNS, bad)
        splits = self._table("*split*.csv*", "study_id", ("split",), (), bad)
        views = self._table("*metadata*.csv*", "dicom_id", ("ViewPosition",), (), bad)
        return (labels, {k: v["split"] for k, v in splits.items()},
                {k: v["ViewPosition"].upper() for k, v in views.items()}, bad)

    def _table(self, pattern: str, key: str, needed: tuple[str, ...], optional: tuple[str, ...],
               bad: list[BadRecord]) -> dict[str, dict[str, str]]:
        """{key cell: {column: cell}} from the root CSV matching `pattern` ({} if none); problems go to `bad`."""
        path = next(iter(sorted(self.root.glob(pattern))), None)
        if path is None:
            return {}
        try:
            header, rows = read_csv(path, self.limits)
        except RecordError as e:
            bad.append(e.bad(path.name))
            return {}
        if missing := [c for c in (key, *needed) if c not in header]:
            bad += [BadRecord(path.name, c, f"missing column {c!r} (file has: {', '.join(header)})") for c in missing]
            return {}
        columns = [c for c in (*needed, *optional) if c in header]
        index = [header.index(c) for c in columns]
        table: dict[str, dict[str, str]] = {}
        cells: dict[str, str] = {}  # one object per distinct cell ("1.0", "PA"): 227k studies stay small
        line = 1
        try:
            for line, row in enumerate(rows, start=2):
                if len(row) != len(header):
                    bad.append(BadRecord(f"{path.name}:{line}", "row", f"{len(row)} cells, the header has {len(header)}"))
                    continue
                table[row[header.index(key)].strip()] = {
                    c: cells.setdefault(row[i].strip(), row[i].strip()) for c, i in zip(columns, index, strict=True)}
        except csv.Error as e:
            bad.append(BadRecord(path.name, "file", f"malformed CSV after line {line} ({e})"))
        return table

    def _iter_raw(self) -> Iterator[Record | BadRecord]:
        labels, splits, views, bad = self._tables
        yield from bad
        reports = sorted(self.root.glob("files/p*/p*/s*.txt"))
        if not reports:
            yield BadRecord(str(self.root), "report", "no report files files/p*/p*/s*.txt")
        for report in reports:
            raw_split = splits.get(report.stem[1:], "train")
            if self.wants(canonical_split(raw_split) or raw_split):
                yield self._record(report, labels, splits, views)

    def _record(self, report: Path, labels: dict, splits: dict, views: dict) -> Record | BadRecord:
        study = report.stem[1:]
        record_id = f"s{study}"
        try:
            report = inside_root(self.root, report.relative_to(self.root), "report")
            raw = read_bytes(report, "report", self.limits)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise RecordError("report", f"not valid UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
            sections = report_sections(text)
            findings_text = next((v for k, v in sections.items() if "FINDINGS" in k), None)
            impression = next((v for k, v in sections.items() if "IMPRESSION" in k and "FINDINGS" not in k), None)
            target = report_text(findings_text, impression)
            if not target:
                raise RecordError("report", "has no FINDINGS or IMPRESSION section")
            findings = chexpert_findings(labels[study]) if study in labels else None
            image_path = self._image_path(report, views)
            image = image_bytes(image_path, "image", self.limits)
        except RecordError as e:
            return e.bad(record_id)
        raw_split = splits.get(study, "train")
        return Record(
            record_id=record_id, task="report", image=image, prompt=REPORT_PROMPT, target=target,
            study_id=record_id, split=canonical_split(raw_split) or raw_split, findings=findings,
            meta={"subject_id": report.parent.name[1:], "view": views.get(image_path.stem, ""),
                  "image_path": str(image_path.relative_to(self.root.resolve()))})

    def _image_path(self, report: Path, views: dict[str, str]) -> Path:
        """The study's PA image, else AP, else the first by name (views from the metadata CSV)."""
        folder = report.with_suffix("")
        images = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        if not images:
            raise RecordError("image", f"no image in {str(folder.relative_to(self.root.resolve()))!r}")
        best = min(images, key=lambda p: _VIEW_ORDER.get(views.get(p.stem, ""), 2))
        return inside_root(self.root, best.relative_to(self.root.resolve()), "image")
