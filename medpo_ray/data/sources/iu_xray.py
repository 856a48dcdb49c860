"""IU-Xray / OpenI chest X-ray reports: one eCitation XML per report (ecgen-radiology/N.xml) with
FINDINGS / IMPRESSION AbstractText, MeSH terms such as `Pleural Effusion/left/small`, and parentImage
ids naming PNGs (NLMCXR_png/CXR1_1_IM-0001-3001.png) anywhere under the dataset root."""
from __future__ import annotations

import re
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from functools import cached_property
from pathlib import Path

from medpo_ray.data.record import BadRecord, Record
from medpo_ray.data.reports import REPORT_PROMPT
from medpo_ray.data.sources.base import LoadResult, RecordSource
from medpo_ray.data.sources.files import hashed_split, image_bytes, index_files, read_bytes
from medpo_ray.data.validate import RecordError, inside_root

SIDES = {"left": "left", "right": "right", "bilateral": "bilateral"}
SEVERITIES = ("minimal", "mild", "small", "borderline", "moderate", "large", "severe", "massive")


def snake(name: str) -> str:
    """'Pleural Effusion' -> 'pleural_effusion' (the labeler's finding keys)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def parse_mesh(terms: list[str]) -> dict[str, dict]:
    """MeSH terms -> {finding: {present, side, severity, qualifiers}}; 'normal' gives no finding.

    A finding named twice with different sides (Opacity/lung/left, Opacity/lung/right) is bilateral.
    """
    findings: dict[str, dict] = {}
    for term in terms:
        name, *quals = [p.strip() for p in term.split("/")]
        if not name or name.lower() in ("normal", "no indexing"):
            continue
        quals = [q.lower() for q in quals if q]
        side = next((SIDES[q] for q in quals if q in SIDES), None)
        severity = next((q for q in quals if q in SEVERITIES), None)
        rest = [q for q in quals if q not in SIDES and q not in SEVERITIES]
        entry = findings.setdefault(snake(name), {"present": True, "side": side, "severity": severity,
                                                   "qualifiers": []})
        if side and entry["side"] and side != entry["side"]:
            entry["side"] = "bilateral"
        entry["side"] = entry["side"] or side
        entry["severity"] = entry["severity"] or severity
        entry["qualifiers"] += [q for q in rest if q not in entry["qualifiers"]]
    return findings


def report_text(findings: str | None, impression: str | None) -> str:
    """The target report: the FINDINGS and IMPRESSION sections that exist, one per line."""
    parts = [f"Findings: {findings}" if findings else "", f"Impression: {impression}" if impression else ""]
    return "\n".join(p for p in parts if p)


def _clean(text: str | None) -> str | None:
    text = " ".join((text or "").split())
    return text or None


def parse_report_xml(data: bytes, name: str) -> Record | BadRecord:
    """The report record of one eCitation XML file, without its image (`image` is b"" until it is read)."""
    try:
        root = ET.fromstring(data)
    except (ET.ParseError, ValueError, LookupError) as e:  # LookupError: unknown declared encoding
        return RecordError("xml", f"{name} is not well-formed XML ({e})").bad(Path(name).stem)
    uid = root.find("uId")
    record_id = uid.get("id", Path(name).stem) if uid is not None else Path(name).stem
    sections = {(t.get("Label") or "").upper(): _clean(t.text) for t in root.iter("AbstractText")}
    target = report_text(sections.get("FINDINGS"), sections.get("IMPRESSION"))
    if not target:
        return RecordError("report", "has no FINDINGS or IMPRESSION text").bad(record_id)
    major = [t.text.strip() for t in root.iter("major") if t.text and t.text.strip()]
    automatic = [t.text.strip() for t in root.iter("automatic") if t.text and t.text.strip()]
    return Record(
        record_id=record_id, task="report", image=b"", prompt=REPORT_PROMPT, target=target,
        study_id=record_id, split=hashed_split(record_id), findings=parse_mesh(major),
        meta={"image_ids": [p.get("id", "") for p in root.iter("parentImage")], "mesh_major": major,
              "mesh_automatic": automatic, "file": name,
              **{k.lower(): v for k, v in sections.items() if k in ("INDICATION", "COMPARISON") and v}})


class IUXraySource(RecordSource):
    """Report records, one per XML report, with the first of its images found under the root.
    IU-Xray has no official split: a report's split is fixed by a hash of its id (files.hashed_split:
    70% train, 10% val, 20% test), the same on every machine and for every subset of the reports."""

    kind = "iu_xray"

    @classmethod
    def detect(cls, path: Path) -> bool:
        """An XML file, or a folder of them, whose first file is an eCitation report."""
        first = next(iter(cls._xml_files(path)), None)
        if first is None:
            return False
        with open(first, "rb") as f:
            return b"<eCitation" in f.read(4096)

    @staticmethod
    def _xml_files(path: Path) -> list[Path]:
        if path.is_file():
            return [path] if path.suffix.lower() == ".xml" else []
        return sorted(p for p in path.rglob("*.xml") if p.is_file()) if path.is_dir() else []

    @cached_property
    def _images(self) -> dict[str, Path]:
        return index_files(self.root, (".png", ".jpg", ".jpeg", ".dcm"))

    def _iter_raw(self) -> Iterator[Record | BadRecord]:
        files = self._xml_files(self.path)
        if not files:
            yield BadRecord(str(self.path), "file", "no .xml report files found")
        for file in files:
            yield self._record(file)

    def _record(self, file: Path) -> Record | BadRecord:
        try:
            parsed = parse_report_xml(read_bytes(file, "xml", self.limits), file.name)
        except RecordError as e:
            return e.bad(file.stem)
        if isinstance(parsed, BadRecord):
            return parsed
        try:
            image_path = self._image_path(parsed.meta["image_ids"])
            image = image_bytes(image_path, "image", self.limits)
        except RecordError as e:
            return e.bad(parsed.record_id)
        return replace(parsed, image=image,
                       meta={"image_path": str(image_path.relative_to(self.root.resolve())), **parsed.meta})

    @staticmethod
    def text_records(archive: str | Path) -> LoadResult:
        """The reports of an IU-Xray XML archive (.tgz, such as the one torchxrayvision ships), read in
        place and without images: for tools that judge only text (`medpo-ray critic check`)."""
        out = LoadResult()
        try:
            tar = tarfile.open(archive, "r:*")
        except (OSError, tarfile.TarError) as e:
            out.bad.append(BadRecord(str(archive), "file", f"not a readable tar archive ({e})", "iu_xray"))
            return out
        with tar:
            for member in tar:
                if not (member.isfile() and member.name.endswith(".xml")):
                    continue
                parsed = parse_report_xml(tar.extractfile(member).read(), Path(member.name).name)
                if isinstance(parsed, BadRecord):
                    out.bad.append(replace(parsed, source="iu_xray"))
                else:
                    out.records.append(parsed)
        return out

    def _image_path(self, image_ids: list[str]) -> Path:
        if not image_ids:
            raise RecordError("image", "report lists no images (no parentImage element)")
        for image_id in image_ids:
            if (found := self._images.get(image_id.lower())) is not None:
                return inside_root(self.root, found.relative_to(self.root), "image")
        raise RecordError("image", f"none of the report's images found under the root: {', '.join(image_ids)}")
