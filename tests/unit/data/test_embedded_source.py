"""EmbeddedSource: records carry the ground truth; bad rows are quarantined by name, nothing else lost."""
import copy
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medpo_ray.data.record import BadRecord, Record
from medpo_ray.data.reports import REPORT_PROMPT
from medpo_ray.data.schema import STUDIES, VQA
from medpo_ray.data.sources import detect_kind
from medpo_ray.data.sources.embedded import EmbeddedSource

pytestmark = pytest.mark.unit


def test_records_carry_report_answer_findings_mask_and_boxes(embedded_dir, studies, questions):
    result = EmbeddedSource(embedded_dir).load()
    assert result.bad == []
    assert len(result.records) == len(studies) + len(questions)
    by_id = {r.record_id: r for r in result.records}
    for s in studies:
        r = by_id[s["study_id"]]
        assert (r.task, r.prompt, r.target, r.split) == ("report", REPORT_PROMPT, s["report"], s["split"])
        assert r.image == s["image"] and r.lesion_mask == s["lesion_mask"]
        assert r.findings["lesions"] == s["lesions"]
        assert r.findings["count"] == s["findings"]["count"]
        assert r.boxes == tuple(tuple(float(v) for v in les["bbox"]) for les in s["lesions"])
    for q in questions:
        r = by_id[q["qid"]]
        assert (r.task, r.prompt, r.target, r.study_id) == ("vqa", q["question"], q["answer"], q["study_id"])
        assert (r.question_type, r.answer_type) == (q["question_type"], q["answer_type"])
        assert r.findings == by_id[q["study_id"]].findings


def test_task_and_split_filters(embedded_dir, studies, questions):
    reports = EmbeddedSource(embedded_dir, task="report").load().records
    assert {r.task for r in reports} == {"report"} and len(reports) == len(studies)
    vqa = EmbeddedSource(embedded_dir, task="vqa").load().records
    assert {r.task for r in vqa} == {"vqa"} and len(vqa) == len(questions)
    val = EmbeddedSource(embedded_dir, split="val").load().records
    assert {r.split for r in val} == {"val"}
    assert len(val) == sum(s["split"] == "val" for s in studies) + sum(q["split"] == "val" for q in questions)


def test_detected_as_embedded(embedded_dir, tmp_path):
    assert detect_kind(embedded_dir) == "embedded"
    assert not EmbeddedSource.detect(tmp_path)


def _write(rows, schema, path):
    relaxed = pa.schema([f.with_nullable(True) for f in schema])
    pq.write_table(pa.Table.from_pylist(rows, schema=relaxed), path)


def test_bad_rows_are_quarantined_by_name_and_nothing_else_is_lost(tmp_path, studies, questions):
    rows = copy.deepcopy(studies)
    with_lesions = [i for i, s in enumerate(rows) if s["lesions"]]
    wrong_bin, wrong_count, broken_image = with_lesions[:3]
    les = rows[wrong_bin]["lesions"][0]
    les["size"] = next(b for b in ("small", "moderate", "large") if b != les["size"])
    rows[wrong_count]["findings"]["count"]["right"] += 1
    rows[broken_image]["image"] = b"\x89PNG\r\n\x1a\n truncated"
    rows.append(copy.deepcopy(rows[5]))  # duplicate id: the first row keeps it
    rows.append({**copy.deepcopy(rows[6]), "study_id": None})
    _write(rows, STUDIES, tmp_path / "studies.parquet")
    qs = copy.deepcopy(questions) + [{**questions[0], "qid": "orphan-q0", "study_id": "study-999999"}]
    _write(qs, VQA, tmp_path / "vqa.parquet")

    result = EmbeddedSource(tmp_path).load()
    bad = {(b.record_id, b.field) for b in result.bad}
    ids = {i: rows[i]["study_id"] for i in (wrong_bin, wrong_count, broken_image)}
    assert (ids[wrong_bin], "lesions[0].size") in bad
    assert (ids[wrong_count], "findings.count.right") in bad
    assert (ids[broken_image], "image") in bad
    assert (rows[5]["study_id"], "study_id") in bad
    assert (f"studies.parquet row {len(rows) - 1}", "study_id") in bad
    assert ("orphan-q0", "study_id") in bad
    lost_questions = [q for q in questions if q["study_id"] in ids.values()]
    # Questions share their study's image, mask and findings, so they go with it, naming its field.
    field_of = {ids[wrong_bin]: "lesions[0].size", ids[wrong_count]: "findings.count.right",
                ids[broken_image]: "image"}
    assert all((q["qid"], field_of[q["study_id"]]) in bad for q in lost_questions)
    assert all(isinstance(b, BadRecord) and b.reason and b.source == "embedded" for b in result.bad)
    # Every other record is still there.
    assert len(result.records) == (len(studies) - 3) + (len(questions) - len(lost_questions))
    assert all(isinstance(r, Record) for r in result.records)
    assert len(result.bad) == 3 + 2 + len(lost_questions) + 1


def test_missing_files_and_columns_are_reported_not_raised(tmp_path, studies):
    assert [(b.record_id, b.field) for b in EmbeddedSource(tmp_path).load().bad] == [("studies.parquet", "file")]
    table = pa.Table.from_pylist(studies, schema=STUDIES).drop_columns(["report"])
    pq.write_table(table, tmp_path / "studies.parquet")
    bad = EmbeddedSource(tmp_path, task="report").load().bad
    assert Counter(b.field for b in bad) == {"report": 1} and "missing column" in bad[0].reason


def test_data_validate_finds_no_bad_record(embedded_dir, studies, questions):
    from medpo_ray.data.validate import validate_path

    report = validate_path(embedded_dir)
    assert report.kind == "embedded" and report.bad == []
    assert report.good == len(studies) + len(questions)
