"""What the explorer reads from a run directory: its config, metrics.jsonl, the audit tables, and (for the
images) the dataset records the config names. Nothing is written here; reviews.py owns the one file the
explorer writes."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import yaml

from medpo_ray.streaming.audit import AUDIT_DIR

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"


class RunData:
    """Cached, read-only views of one run directory (re-read when a file changes: a running run grows)."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir).resolve()
        self._lock = threading.Lock()
        self._audit: dict[Path, tuple[float, list[dict]]] = {}
        self._records: dict | None = None

    def config(self) -> dict:
        """The run's resolved config ({} when the run predates config.yaml)."""
        path = self.dir / CONFIG_FILE
        return yaml.safe_load(path.read_text()) or {} if path.is_file() else {}

    def steps(self) -> list[dict]:
        """metrics.jsonl, one dict per step (a line torn by a running writer is skipped)."""
        path = self.dir / METRICS_FILE
        out = []
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and "step" in row:
                    out.append(row)
        return out

    def audit_steps(self) -> list[int]:
        """Steps that have an audit table."""
        return sorted(int(p.stem.split("-")[1]) for p in (self.dir / AUDIT_DIR).glob("step-*.parquet"))

    def rows(self, step: int) -> list[dict]:
        """The audit table of one step ([] when there is none)."""
        import pyarrow.parquet as pq

        path = self.dir / AUDIT_DIR / f"step-{int(step):06d}.parquet"
        if not path.is_file():
            return []
        mtime = path.stat().st_mtime
        with self._lock:
            hit = self._audit.get(path)
            if hit is None or hit[0] != mtime:
                hit = (mtime, pq.read_table(path).to_pylist())
                self._audit[path] = hit
        return hit[1]

    def all_rows(self) -> list[dict]:
        """Every step's audit rows, in step order."""
        return [r for s in self.audit_steps() for r in self.rows(s)]

    def row(self, step: int, record_id: str) -> dict | None:
        """One audit row, or None."""
        return next((r for r in self.rows(step) if r["record_id"] == record_id), None)

    def record(self, key: str):
        """The dataset record behind an audit row's key (a record id, with "@k" for the k-th sample of its
        prompt), for its image and mask; None when the dataset the config names cannot be read (moved,
        deleted) or does not hold it."""
        with self._lock:
            if self._records is None:
                self._records = self._load_records()
        base, _, sample = key.rpartition("@")
        return self._records.get(key) or (self._records.get(base) if base and sample.isdigit() else None)

    def _load_records(self) -> dict:
        from medpo_ray.data.sources import open_source
        from medpo_ray.errors import MedpoError

        data = self.config().get("data") or {}
        try:
            loaded = open_source(data.get("source", "embedded"), data.get("path", ""), split="train").load()
        except (MedpoError, OSError, ValueError):
            return {}
        return {r.record_id: r for r in loaded.records}
