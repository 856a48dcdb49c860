"""`medpo-ray data validate` on the embedded data, clean and seeded with every kind of bad input."""
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from driver.cli import main
from medpo_ray.data.validate import validate_path
from tests.unit.data.layouts import image, mask

pytestmark = pytest.mark.unit


def _edit(path, column, edits, type_=None):
    """Rewrite one column of a parquet file: row index -> new value (raw bytes allowed for strings)."""
    table = pq.read_table(path)
    col = table.column(column).combine_chunks()
    raw = col.cast(pa.binary()) if pa.types.is_string(col.type) else col
    values = raw.to_pylist()
    for i, v in edits.items():
        values[i] = v
    if pa.types.is_string(col.type) and type_ is None:
        # Build the string column from raw buffers, as a writer that skips UTF-8 validation would.
        binary = pa.array(values, type=pa.binary())
        new = pa.Array.from_buffers(pa.string(), len(binary), binary.buffers())
    else:
        new = pa.array(values, type=type_ or col.type)
    i = table.schema.get_field_index(column)
    pq.write_table(table.set_column(i, pa.field(column, new.type), new), path)


def test_embedded_data_validates_clean(embedded_dir, capsys):
    assert main(["data", "validate", str(embedded_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "kind embedded" in out and "bad records" not in out
    report = validate_path(embedded_dir)
    assert report.bad == [] and {t for _, t in report.counts} == {"report", "vqa"}
    assert out.strip().endswith(f"summary: {report.good} good, 0 bad in " + out.strip().split(" in ")[-1])


def _seed(embedded_dir, root, questions: dict[int, bytes]):
    """Copy the embedded data to `root`: studies 0-2 get a corrupt image, a truncated image and a mask
    of the wrong shape; `questions` (row from the end of vqa.parquet -> raw bytes) replace questions
    of the last study. Returns the expected (record id, field) -> reason fragment."""
    shutil.copytree(embedded_dir, root)
    studies = pq.read_table(root / "studies.parquet")
    ids, png = studies.column("study_id").to_pylist(), studies.column("image")[3].as_py()
    corrupt = bytearray(png)
    corrupt[60:80] = b"\x00" * 20  # inside IDAT: the chunk CRC and the zlib stream break
    _edit(root / "studies.parquet", "image", {0: bytes(corrupt), 1: png[: len(png) // 2]})
    _edit(root / "studies.parquet", "lesion_mask", {2: mask(50, 40)})
    qids = pq.read_table(root / "vqa.parquet").column("qid").to_pylist()
    _edit(root / "vqa.parquet", "question", {len(qids) - k: v for k, v in questions.items()})
    return {(ids[0], "image"): "corrupt PNG", (ids[1], "image"): "truncated PNG",
            (ids[2], "lesion_mask"): "mask is 50x40 but the image is"}, [qids[len(qids) - k] for k in questions]


def test_seeded_bad_inputs_are_each_named_and_the_rest_loads(embedded_dir, tmp_path, capsys):
    root = tmp_path / "seeded"
    expected, (q_empty, q_long) = _seed(embedded_dir, root, {1: b"", 2: b"x" * (1 << 20)})
    expected.update({(q_empty, "question"): "empty", (q_long, "question"): "1,048,576 characters, over the limit of 8,192"})
    report = validate_path(root)
    got = {(b.record_id, b.field): b.reason for b in report.bad}
    for key, reason in expected.items():
        assert reason in got.get(key, ""), (key, got.get(key))
    # The questions about a broken study share its image or mask, so they fail with it; the rest loads.
    study_field = {rid: field for rid, field in expected if field != "question"}
    vqa = pq.read_table(root / "vqa.parquet").select(["qid", "study_id"]).to_pylist()
    expected_extra = {(q["qid"], study_field[q["study_id"]]) for q in vqa if q["study_id"] in study_field}
    assert set(got) - set(expected) == expected_extra and len(expected_extra) >= 3
    assert report.good == validate_path(embedded_dir).good - len(got)
    assert main(["data", "validate", str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "embedded" and out["bad"] == len(report.bad) and out["good"] == report.good
    assert main(["data", "validate", str(root), "--no-progress"]) == 0
    text = capsys.readouterr().out
    for rid, field in expected:
        assert f"record {rid!r}, field {field!r}" in text


def test_non_utf8_text_in_the_embedded_parquet_costs_one_row(embedded_dir, tmp_path):
    root = tmp_path / "seeded"
    _, (qid,) = _seed(embedded_dir, root, {1: b"Is there a nodule in the l\xe9ft lung?"})
    report = validate_path(root)
    got = {(b.record_id, b.field): b.reason for b in report.bad}
    assert got.get((qid, "question")) == "not valid UTF-8 (byte 0xe9 at offset 26)", got
    assert report.good == validate_path(embedded_dir).good - len(got)


def test_a_missing_or_mistyped_column_is_named_and_the_other_file_still_loads(embedded_dir, tmp_path):
    clean = validate_path(embedded_dir)
    n_reports = sum(n for (_, task), n in clean.counts.items() if task == "report")
    missing = tmp_path / "missing"
    shutil.copytree(embedded_dir, missing)
    table = pq.read_table(missing / "vqa.parquet")
    pq.write_table(table.drop_columns(["answer"]), missing / "vqa.parquet")
    report = validate_path(missing)
    assert [(b.record_id, b.field) for b in report.bad] == [("vqa.parquet", "answer")]
    assert "missing column" in report.bad[0].reason and report.good == n_reports
    wrong = tmp_path / "wrong"
    shutil.copytree(embedded_dir, wrong)
    table = pq.read_table(wrong / "vqa.parquet")
    i = table.schema.get_field_index("answer")
    pq.write_table(table.set_column(i, "answer", pa.array(range(table.num_rows), pa.int64())), wrong / "vqa.parquet")
    report = validate_path(wrong)
    assert report.bad and all(b.field == "answer" for b in report.bad)
    assert "int" in report.bad[0].reason and report.good == n_reports


def test_unknown_layout_and_missing_path_are_clear_errors(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["data", "validate", str(tmp_path)]) == 2
    assert "cannot tell the dataset kind" in capsys.readouterr().err
    assert main(["data", "validate", str(tmp_path / "nope")]) == 2
    assert "dataset path not found" in capsys.readouterr().err
    assert main(["data", "validate", str(tmp_path), "--max-prompt-chars", "3"]) == 2
    assert "data.max_prompt_chars" in capsys.readouterr().err


def test_hf_vqa_file_through_the_cli(tmp_path, capsys):
    struct = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
    rows = [{"image": {"bytes": image(fmt="JPEG"), "path": "a.jpg"}, "question": "is this normal?", "answer": "yes"},
            {"image": {"bytes": b"\xff\xd8junk", "path": "b.jpg"}, "question": "what is shown?", "answer": "lung"}]
    schema = pa.schema([pa.field("image", struct), pa.field("question", pa.string()), pa.field("answer", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "test-00000-of-00001.parquet")
    assert main(["data", "validate", str(tmp_path), "--no-progress", "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "kind hf_vqa" in out and "test       vqa             1" in out
    assert "hf_vqa: record 'test/000001', field 'image':" in out and "summary: 1 good, 1 bad (image: 1)" in out


def test_a_dataset_with_no_record_is_an_error_not_a_clean_report(embedded_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    shutil.copytree(embedded_dir, empty)
    for f in empty.glob("*.parquet"):
        pq.write_table(pq.read_table(f).slice(0, 0), f)
    assert main(["data", "validate", str(empty), "--no-progress"]) == 1
    assert "holds no usable record" in capsys.readouterr().err
    assert main(["data", "validate", str(empty), "--json"]) == 1
