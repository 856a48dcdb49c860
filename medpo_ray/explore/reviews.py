"""Clinician review marks: "critic right" / "critic wrong" with a note, per pair, stored append-only in
<run>/reviews.jsonl. Each mark is one line written under an exclusive file lock, so two reviewers (or two
explorer processes) at once lose nothing, and a restart reads every mark back. A reviewer's later mark on
the same pair supersedes their earlier one; all lines are kept."""
from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

REVIEWS_FILE = "reviews.jsonl"
MARKS = ("critic_right", "critic_wrong")
MAX_NOTE = 2000
MAX_NAME = 80


class ReviewError(ValueError):
    """A mark that cannot be stored (unknown mark, missing pair, oversized note); the message names the field."""


@dataclass(frozen=True)
class Review:
    """One mark on one pair."""

    step: int
    record_id: str
    mark: str
    reviewer: str
    note: str = ""
    time: float = 0.0


def _read(path: Path) -> list[Review]:
    out = []
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            out.append(Review(**json.loads(line)))
        except (ValueError, TypeError):
            continue  # a line torn by a crash mid-write: the marks before and after it stand
    return out


class ReviewLog:
    """The review marks of one run directory."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / REVIEWS_FILE

    def add(self, step: int, record_id: str, mark: str, reviewer: str, note: str = "") -> Review:
        """Append one mark (validated); returns it."""
        if mark not in MARKS:
            raise ReviewError(f"mark: {mark!r} is not one of {', '.join(MARKS)}")
        reviewer = (reviewer or "").strip() or "anonymous"
        if len(reviewer) > MAX_NAME:
            raise ReviewError(f"reviewer: longer than {MAX_NAME} characters")
        if len(note) > MAX_NOTE:
            raise ReviewError(f"note: {len(note)} characters, the limit is {MAX_NOTE}")
        review = Review(int(step), str(record_id), mark, reviewer, note, round(time.time(), 3))
        line = json.dumps(asdict(review), ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # one whole line at a time, whoever else is writing
            try:
                f.write(line)
                f.flush()
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return review

    def all(self) -> list[Review]:
        """Every mark, in the order written."""
        return _read(self.path)

    def current(self) -> dict[tuple[int, str], dict[str, Review]]:
        """Per pair (step, record id), each reviewer's latest mark."""
        out: dict[tuple[int, str], dict[str, Review]] = {}
        for r in self.all():
            out.setdefault((r.step, r.record_id), {})[r.reviewer] = r
        return out

    def summary(self) -> dict:
        """The critic's precision from the marks: of the reviewed pairs' current marks, the share "critic right"."""
        marks = [r for per in self.current().values() for r in per.values()]
        right = sum(r.mark == "critic_right" for r in marks)
        by_reviewer: dict[str, list[int]] = {}
        for r in marks:
            by_reviewer.setdefault(r.reviewer, [0, 0])[r.mark == "critic_wrong"] += 1
        return {"pairs_reviewed": len(self.current()), "marks": len(marks), "critic_right": right,
                "critic_wrong": len(marks) - right, "critic_precision": right / len(marks) if marks else None,
                "by_reviewer": {k: {"critic_right": v[0], "critic_wrong": v[1]} for k, v in sorted(by_reviewer.items())}}


def marked_wrong(run_dirs: Iterable[str | Path]) -> set[str]:
    """Record ids whose pair some reviewer currently marks "critic wrong", over the runs (train.exclude_reviewed)."""
    out = set()
    for d in run_dirs:
        for (_, record_id), per in ReviewLog(d).current().items():
            if any(r.mark == "critic_wrong" for r in per.values()):
                out.add(record_id)
    return out
