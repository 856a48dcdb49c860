"""The one record type every source yields, and the quarantine entry for a record that failed."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Task = Literal["report", "vqa"]


@dataclass(frozen=True)
class Record:
    """One training/eval example: an image, a prompt and its ground truth.

    `record_id` is stable and unique within a dataset (it seeds corruption and keys the training
    ledger). `image` holds encoded bytes (PNG/JPEG) exactly as stored. `findings` is the structured
    ground truth when the source has it (the embedded data always does), else None.
    """

    record_id: str
    task: Task
    image: bytes
    prompt: str
    target: str
    study_id: str = ""
    split: str = "train"
    findings: dict[str, Any] | None = None
    lesion_mask: bytes | None = None  # encoded PNG, same height/width as the image, nonzero = lesion
    boxes: tuple[tuple[float, float, float, float], ...] = ()  # (x0, y0, x1, y1) in image pixels
    question_type: str | None = None  # presence | count | side | size | modality | ...
    answer_type: str | None = None  # closed | open
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BadRecord:
    """A record that was quarantined: where it came from, which field is wrong, and why."""

    record_id: str
    field: str
    reason: str
    source: str = ""

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}record {self.record_id!r}, field {self.field!r}: {self.reason}"
