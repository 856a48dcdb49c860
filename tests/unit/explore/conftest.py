"""A run directory as the driver leaves it (config.yaml, metrics.jsonl, audit tables written by the real
AuditWriter), over a small embedded dataset, for the explorer's API tests (the browser test uses a run of
the real pipeline)."""
from __future__ import annotations

import json

import pytest
import yaml

from medpo_ray.data.lesions import LesionParams
from medpo_ray.data.sources import open_source
from medpo_ray.data.synth import synthesize
from medpo_ray.streaming.audit import AuditWriter, step_rows

HOSTILE = "<script>document.title='pwned'</script> No nodule."


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("explore")
    synthesize(root / "data", studies=8, seed=1, size=112, params=LesionParams.from_difficulty(0.3, 112))
    records = [r for r in open_source("embedded", root / "data", split="train").load().records if r.task == "report"]
    run = root / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"source": "embedded", "path": str(root / "data")},
                                                     "corruption": {"mode": "noise"}}))
    audit = AuditWriter(run)
    for step in (1, 2):
        rows = []
        for i, r in enumerate(records[:3]):
            y0 = HOSTILE if (step, i) == (1, 0) else r.target
            rows.append({"record_id": r.record_id, "policy_version": step - 1, "y0": y0, "verdict": "right",
                         "critic": "reference", "critic_raw": "", "critic_seconds": 0.001,
                         "critic_reason": "y0 agrees", "branch": "B", "y_plus": y0, "y_minus": "Za" + y0[2:],
                         "spans_plus": json.dumps([[0, 2]]), "spans_minus": json.dumps([[0, 2]]),
                         "edit_kinds": "presence", "rejection": None})
        audit.write(step, step_rows(step, rows, {records[3].record_id: "editor:unreadable"},
                                    {r["record_id"] for r in rows}))
    audit.close()
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 0.7 - 0.1 * s, "pairs": 3, "step_s": 2.0,
                                                           "rejections": {"editor:unreadable": 1}}) + "\n"
                                               for s in (1, 2)))
    return run, records
