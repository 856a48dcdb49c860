"""Score the labeler on real IU-Xray (OpenI) reports against their MeSH tags.

The reports (CC BY-NC-ND) are read at run time from the `torchxrayvision` package, which ships them
as `data/NLMCXR_reports.tgz`; they are never copied anywhere. The package is optional and only its
data file is used, so it may be installed with `--no-deps`.
"""
from __future__ import annotations

import importlib.util
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from medpo_ray.errors import MedpoError
from medpo_ray.labeler.rules import label

# Finding -> MeSH headings (first part of a <major> tag such as "Pleural Effusion/left/small").
MESH: dict[str, tuple[str, ...]] = {
    "pleural_effusion": ("Pleural Effusion",),
    "cardiomegaly": ("Cardiomegaly",),
    "atelectasis": ("Pulmonary Atelectasis",),
    "pneumothorax": ("Pneumothorax",),
    "edema": ("Pulmonary Edema",),
    "pneumonia": ("Pneumonia",),
    "consolidation": ("Consolidation",),
    "nodule": ("Nodule",),
    "mass": ("Mass",),
    "fracture": ("Fractures, Bone",),
}
_SIDES = {"left", "right", "bilateral"}


class IUXrayUnavailable(MedpoError):
    """The optional `torchxrayvision` package (which ships the IU-Xray reports) is not installed."""


@dataclass(frozen=True)
class IUReport:
    """One IU-Xray report: its id, FINDINGS + IMPRESSION text, and MeSH major tags."""

    report_id: str
    text: str
    mesh: tuple[str, ...]


def reports_archive() -> Path:
    """Path of the IU-Xray report archive inside the installed torchxrayvision package."""
    # find_spec locates the package without importing it (its import pulls in torch and skimage).
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise IUXrayUnavailable("torchxrayvision is not installed (pip install --no-deps torchxrayvision)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "NLMCXR_reports.tgz"
    if not path.is_file():
        raise IUXrayUnavailable(f"torchxrayvision has no IU-Xray report archive at {path}")
    return path


def iter_reports(archive: Path | None = None) -> Iterator[IUReport]:
    """Reports with a FINDINGS or IMPRESSION section, in archive order."""
    with tarfile.open(archive or reports_archive(), "r:gz") as tar:
        for member in tar:
            if not (member.isfile() and member.name.endswith(".xml")):
                continue
            root = ET.parse(tar.extractfile(member)).getroot()
            sections = {el.get("Label"): (el.text or "").strip() for el in root.iter("AbstractText")}
            text = " ".join(t for t in (sections.get("FINDINGS"), sections.get("IMPRESSION")) if t)
            if text:
                mesh = tuple((el.text or "").strip() for el in root.iter("major"))
                yield IUReport(Path(member.name).stem, text, mesh)


@dataclass
class Score:
    """Counts for one finding; side_* count true positives whose MeSH tag names a side."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    side_total: int = 0
    side_agree: int = 0

    @property
    def precision(self) -> float:
        """tp / (tp + fp), 0 when nothing was predicted."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        """tp / (tp + fn), 0 when nothing is tagged."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0


def evaluate(reports, uncertain_positive: bool = False) -> tuple[int, dict[str, Score]]:
    """(number of reports, per-finding Score) of the labeler against MeSH major tags."""
    scores = {f: Score() for f in MESH}
    positive = {"present", "uncertain"} if uncertain_positive else {"present"}
    n = 0
    for rep in reports:
        n += 1
        claims = label(rep.text)
        for finding, headings in MESH.items():
            tags = [t.split("/") for t in rep.mesh if t.split("/")[0] in headings]
            hits = [c for c in claims if c.finding == finding and c.status in positive]
            s = scores[finding]
            s.tp += bool(tags) and bool(hits)
            s.fp += (not tags) and bool(hits)
            s.fn += bool(tags) and not hits
            truth_sides = {p.lower() for t in tags for p in t[1:]} & _SIDES
            if tags and hits and len(truth_sides) == 1:
                s.side_total += 1
                s.side_agree += any(c.side is not None and c.side.value in truth_sides for c in hits)
    return n, scores


def format_table(n: int, scores: dict[str, Score]) -> str:
    """A fixed-width P/R/F1 table, one finding per row."""
    lines = [f"IU-Xray reports: {n}", f"{'finding':<18}{'P':>6}{'R':>6}{'F1':>6}{'tp':>6}{'fp':>6}{'fn':>6}"
             f"{'side':>10}"]
    for f, s in scores.items():
        f1 = 2 * s.precision * s.recall / (s.precision + s.recall) if s.precision + s.recall else 0.0
        side = f"{s.side_agree}/{s.side_total}" if s.side_total else "-"
        lines.append(f"{f:<18}{s.precision:>6.2f}{s.recall:>6.2f}{f1:>6.2f}{s.tp:>6}{s.fp:>6}{s.fn:>6}{side:>10}")
    return "\n".join(lines)
