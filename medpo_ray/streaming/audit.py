"""The audit trail: one parquet table per training step of every pair the step's prompts led to, and why.

A clinician or an auditor asks first which pairs the model learned from and why. Each row is one prompt
issued for the step: its record id, the policy version that answered, the answer y0, the critic's
verdict, raw output and latency, the pair (y+, y-, character spans, branch) when one was built, the
reason it was dropped when it was (`stage:code`, at whichever stage), and whether the step trained it.
Tables go to `<run>/audit/step-NNNNNN.parquet`, written on a background thread so the step does not wait
for the disk; read them all with `pandas.read_parquet("<run>/audit")`.
"""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

COLUMNS = ("step", "record_id", "policy_version", "y0", "verdict", "critic", "critic_raw", "critic_seconds",
           "critic_reason", "branch", "y_plus", "y_minus", "spans_plus", "spans_minus", "edit_kinds",
           "rejection", "trained", "corruption_mode", "corruption_region")
# Columns a later stage adds to an answer's row (the corruption stage: what x~ is and where its region came
# from: a lesion mask, boxes, or "whole", the whole-image noise real data without masks falls back to).
LATER_COLUMNS = ("corruption_mode", "corruption_region")
AUDIT_DIR = "audit"


def editor_row(record_id: str, version: int, y0: str, verdict, result) -> dict:
    """The span editor's row for one answer: its verdict and the pair or the rejection it became."""
    pair = result if hasattr(result, "y_plus") else None
    return {"record_id": record_id, "policy_version": int(version), "y0": y0 if isinstance(y0, str) else repr(y0),
            "verdict": verdict.verdict, "critic": verdict.critic, "critic_raw": verdict.raw,
            "critic_seconds": float(verdict.seconds), "critic_reason": verdict.reason[:200],
            "branch": pair.branch if pair else None, "y_plus": pair.y_plus if pair else None,
            "y_minus": pair.y_minus if pair else None,
            "spans_plus": json.dumps([list(s) for s in pair.spans_plus]) if pair else None,
            "spans_minus": json.dumps([list(s) for s in pair.spans_minus]) if pair else None,
            "edit_kinds": ",".join(pair.edit_kinds) if pair else None,
            "rejection": None if pair else f"editor:{result.reason}"}


def step_rows(step: int, rows: list[dict], dropped: dict[str, str], trained: set[str]) -> list[dict]:
    """A step's table: the editor's rows (with what later stages added to them), plus a row for each prompt
    dropped before the editor saw it; a drop at a later stage (corruption, the learner's check, staleness)
    overrides the editor's none."""
    added: dict[str, dict] = {}
    for r in rows:  # a later stage's row only adds its columns to the answer's row
        if "verdict" not in r:
            added.setdefault(r["record_id"], {}).update({k: r[k] for k in LATER_COLUMNS if k in r})
    rows = [r for r in rows if "verdict" in r]
    seen = {r["record_id"] for r in rows}
    out = [dict.fromkeys(COLUMNS) | {"record_id": k, "rejection": code} for k, code in dropped.items() if k not in seen]
    for r in rows:
        later = dropped.get(r["record_id"])
        out.append(dict.fromkeys(COLUMNS) | r | added.get(r["record_id"], {}) | ({"rejection": later} if later else {}))
    for r in out:
        r["step"], r["trained"] = step, r["record_id"] in trained
    return out


class AuditWriter:
    """Writes step tables on one background thread; `close` waits for the last one."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir) / AUDIT_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit")
        self._pending: list[Future] = []
        self._lock = threading.Lock()
        self.write_seconds: list[float] = []

    def path(self, step: int) -> Path:
        """Where step `step`'s table goes."""
        return self.dir / f"step-{step:06d}.parquet"

    def write(self, step: int, rows: list[dict]) -> None:
        """Queue step `step`'s table for writing (atomically: a reader never sees half a file)."""
        self._pending = [f for f in self._pending if not f.done()] + [self._pool.submit(self._write, step, rows)]

    def _write(self, step: int, rows: list[dict]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        t0 = time.perf_counter()
        table = pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=table_schema())
        tmp = self.path(step).with_suffix(".tmp")
        pq.write_table(table, tmp)
        tmp.replace(self.path(step))
        with self._lock:
            self.write_seconds.append(time.perf_counter() - t0)

    def forget_after(self, step: int) -> None:
        """Delete tables of steps after `step` (a resumed run trains them again and rewrites them)."""
        for f in self.dir.glob("step-*.parquet"):
            if int(f.stem.split("-")[1]) > step:
                f.unlink()

    def close(self) -> None:
        """Wait for every queued table; a failed write raises here."""
        for f in self._pending:
            f.result()
        self._pool.shutdown(wait=True)


def table_schema():
    """The table's column types (built on use: pyarrow is imported only where tables are written)."""
    import pyarrow as pa

    s, i, f = pa.string(), pa.int64(), pa.float64()
    return pa.schema([("step", i), ("record_id", s), ("policy_version", i), ("y0", s), ("verdict", s),
                      ("critic", s), ("critic_raw", s), ("critic_seconds", f), ("critic_reason", s), ("branch", s),
                      ("y_plus", s), ("y_minus", s), ("spans_plus", s), ("spans_minus", s), ("edit_kinds", s),
                      ("rejection", s), ("trained", pa.bool_()), ("corruption_mode", s), ("corruption_region", s)])
