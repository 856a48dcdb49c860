"""The audit trail's rows and tables: every prompt of a step, its pair or its reason, readable with pandas."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from medpo_ray.critics.base import CriticVerdict, Edit
from medpo_ray.data.record import Record
from medpo_ray.editing.pairs import PairBuilder
from medpo_ray.streaming.audit import COLUMNS, AuditWriter, step_rows

pytestmark = pytest.mark.unit

Y0 = "There is a small left pleural effusion."


def test_rows_say_which_pairs_were_trained_and_why_the_rest_were_not(tmp_path):
    recs = [Record(f"s{i}", "report", b"", "Describe.", "") for i in range(3)]
    verdicts = [CriticVerdict("wrong", (Edit("left", "right", kind="laterality"),), "openai", "side",
                              raw='{"verdict": "wrong"}', seconds=0.25),
                CriticVerdict("abstain", critic="openai", reason="timeout: after 3 tries", seconds=30.0),
                CriticVerdict("right", (Edit("small", "large", kind="size"),), "openai", raw="{}", seconds=0.5)]
    batch = PairBuilder().build_batch(recs, [Y0] * 3, verdicts, [4, 4, 4])
    x_tilde = [{"record_id": "s0", "corruption_mode": "noise", "corruption_region": "whole"}]  # no mask or boxes
    rows = step_rows(7, batch.rows + x_tilde, {"s2": "corruption:y_plus", "s9": "rollout:image"}, trained={"s0"})
    writer = AuditWriter(tmp_path)
    writer.write(7, rows)
    writer.close()
    table = pd.read_parquet(tmp_path / "audit").set_index("record_id")
    assert list(pd.read_parquet(writer.path(7)).columns) == list(COLUMNS)
    assert table.loc["s0"].trained and table.loc["s0"].branch == "A" and table.loc["s0"].y_minus == Y0
    assert json.loads(table.loc["s0"].spans_plus) == [[17, 22]]  # "right" in y+ and table.loc["s0"].critic_seconds == 0.25
    assert table.loc["s0"].critic_raw == '{"verdict": "wrong"}' and table.loc["s0"].policy_version == 4
    assert table.loc["s1"].rejection == "editor:timeout" and table.loc["s1"].critic_seconds == 30.0
    assert table.loc["s2"].rejection == "corruption:y_plus" and table.loc["s2"].branch == "B"  # dropped later
    assert table.loc["s9"].rejection == "rollout:image" and pd.isna(table.loc["s9"].y0)  # never reached the editor
    assert (table.step == 7).all() and table.trained.sum() == 1 and len(table) == 4  # x~'s row joined s0's
    assert (table.loc["s0"].corruption_mode, table.loc["s0"].corruption_region) == ("noise", "whole")
    assert pd.isna(table.loc["s1"].corruption_region)


def test_a_resumed_run_rewrites_the_steps_after_its_checkpoint(tmp_path):
    writer = AuditWriter(tmp_path)
    for step in (1, 2, 3):
        writer.write(step, step_rows(step, [], {f"k{step}": "editor:abstain"}, set()))
    writer.close()
    again = AuditWriter(tmp_path)
    again.forget_after(2)
    assert sorted(p.name for p in again.dir.iterdir()) == ["step-000001.parquet", "step-000002.parquet"]
    again.close()
