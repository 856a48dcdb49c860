"""The record ledger: proves every record is trained at most once and none is lost.

Stages report ids as they issue and finish work. A record is `issued` when the driver hands it to the
first stage, `in flight` at a stage until that stage returns it, and `trained` once a learner step that
contained it completed. A record dropped on purpose (critic abstained, too stale, bad input) is
`dropped` with a reason. On an actor failure the driver asks for that stage's in-flight ids and
re-issues them (at-least-once delivery); `mark_trained` refuses a second training of the same id
(idempotent consumer), which is what makes the whole loop exactly-once for training.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


class LedgerError(RuntimeError):
    """An id was trained twice or finished at a stage that never had it: a pipeline bug."""


@dataclass
class Ledger:
    """Tracks record ids through the stages of the on-policy loop."""

    issued: set[str] = field(default_factory=set)
    in_flight: dict[str, set[str]] = field(default_factory=dict)  # stage -> ids
    trained: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)  # id -> reason
    reissued: Counter = field(default_factory=Counter)  # stage -> count

    def issue(self, ids: list[str]) -> None:
        """Register ids entering the pipeline; an id may be issued once per run."""
        dup = [i for i in ids if i in self.issued]
        if dup:
            raise LedgerError(f"ids issued twice: {dup[:5]}")
        self.issued.update(ids)

    def start(self, stage: str, ids: list[str]) -> None:
        """Ids handed to a stage."""
        self.in_flight.setdefault(stage, set()).update(ids)

    def finish(self, stage: str, ids: list[str]) -> None:
        """Ids returned by a stage (any outcome)."""
        held = self.in_flight.setdefault(stage, set())
        unknown = [i for i in ids if i not in held]
        if unknown:
            raise LedgerError(f"stage {stage!r} finished ids it never started: {unknown[:5]}")
        held.difference_update(ids)

    def pending(self, stage: str) -> list[str]:
        """Ids in flight at a stage, e.g. to re-issue after its actor died."""
        return sorted(self.in_flight.get(stage, ()))

    def reissue(self, stage: str) -> list[str]:
        """Take back a dead stage's in-flight ids so the driver can hand them out again."""
        ids = self.pending(stage)
        self.in_flight[stage] = set()
        self.reissued[stage] += len(ids)
        return ids

    def drop(self, ids: list[str], reason: str) -> None:
        """Records that leave the pipeline untrained on purpose."""
        for i in ids:
            self.dropped[i] = reason

    def mark_trained(self, ids: list[str]) -> None:
        """Ids whose learner step completed; training an id twice is an error."""
        seen = set(self.trained)
        again = [i for i in ids if i in seen]
        if again or len(set(ids)) != len(ids):
            raise LedgerError(f"ids trained twice: {(again or ids)[:5]}")
        unknown = [i for i in ids if i not in self.issued]
        if unknown:
            raise LedgerError(f"trained ids that were never issued: {unknown[:5]}")
        self.trained.extend(ids)

    def lost(self) -> list[str]:
        """Issued ids neither trained, dropped, nor in flight anywhere: must stay empty."""
        accounted = set(self.trained) | set(self.dropped)
        for held in self.in_flight.values():
            accounted |= held
        return sorted(self.issued - accounted)

    def summary(self) -> dict:
        """Counts for logs and checkpoints."""
        return {
            "issued": len(self.issued),
            "trained": len(self.trained),
            "dropped": dict(Counter(self.dropped.values())),
            "in_flight": {s: len(v) for s, v in self.in_flight.items() if v},
            "reissued": dict(self.reissued),
            "lost": len(self.lost()),
        }

    def to_json(self) -> dict:
        """A JSON-able snapshot for checkpoints."""
        return {
            "issued": sorted(self.issued),
            "in_flight": {s: sorted(v) for s, v in self.in_flight.items()},
            "trained": list(self.trained),
            "dropped": dict(self.dropped),
            "reissued": dict(self.reissued),
        }

    @classmethod
    def from_json(cls, data: dict) -> Ledger:
        """Inverse of to_json."""
        return cls(
            issued=set(data["issued"]),
            in_flight={s: set(v) for s, v in data["in_flight"].items()},
            trained=list(data["trained"]),
            dropped=dict(data["dropped"]),
            reissued=Counter(data.get("reissued", {})),
        )

    def save(self, path: str | Path) -> None:
        """Write the snapshot atomically (write then rename)."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json()))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> Ledger:
        """Read a snapshot written by save."""
        return cls.from_json(json.loads(Path(path).read_text()))
