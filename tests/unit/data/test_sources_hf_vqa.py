"""HF-style VQA parquet (VQA-RAD / PathVQA / SLAKE mirrors) written the way `datasets` writes it."""
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medpo_ray.data.record import Record
from medpo_ray.data.sources import detect_kind, open_source
from medpo_ray.data.sources.hf_vqa import HFVQASource
from tests.unit.data.layouts import image

pytestmark = pytest.mark.unit

IMAGE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
SCHEMA = pa.schema([pa.field("image", IMAGE), pa.field("question", pa.string()), pa.field("answer", pa.string())])


def _write(path, rows, schema=SCHEMA):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _row(q="is there a pleural effusion?", a="yes", seed=0, name="synpic100.jpg"):
    return {"image": {"bytes": image(fmt="JPEG", seed=seed), "path": name}, "question": q, "answer": a}


@pytest.fixture
def vqa_rad(tmp_path):
    root = tmp_path / "vqa-rad"
    _write(root / "data" / "train-00000-of-00001-0d2e.parquet",
           [_row(), _row("what organ is shown?", "lungs", 1, "synpic200.jpg"), _row("is this an mri?", "no", 0)])
    _write(root / "data" / "test-00000-of-00001-94c1.parquet", [_row("where is the mass?", "left lung", 2)])
    return root


def test_vqa_rad_layout_loads_with_splits_ids_and_answer_types(vqa_rad):
    assert detect_kind(vqa_rad) == "hf_vqa"
    result = open_source("hf_vqa", vqa_rad).load()
    assert result.bad == []
    by_id = {r.record_id: r for r in result.records}
    assert sorted(by_id) == ["test/000000", "train/000000", "train/000001", "train/000002"]
    first = by_id["train/000000"]
    assert (first.task, first.prompt, first.target, first.split) == ("vqa", "is there a pleural effusion?", "yes", "train")
    assert first.image == image(fmt="JPEG", seed=0) and first.study_id == "synpic100.jpg"
    # VQA-RAD's parquet has no answer_type: yes/no answers are closed, the rest open (its convention).
    assert [by_id[k].answer_type for k in sorted(by_id)] == ["open", "closed", "open", "closed"]
    assert by_id["test/000000"].split == "test"
    # Stable ids: a second read gives the same ids for the same rows.
    assert [r.record_id for r in open_source("hf_vqa", vqa_rad).load().records] == [r.record_id for r in result.records]
    assert [r.record_id for r in open_source(None, vqa_rad, split="test").load().records] == ["test/000000"]


def test_image_path_without_bytes_is_read_relative_to_the_shard_and_kept_inside_the_root(tmp_path):
    root = tmp_path / "pathvqa"
    (root / "data" / "images").mkdir(parents=True)
    (root / "data" / "images" / "a.png").write_bytes(image())
    (tmp_path / "outside.png").write_bytes(image())
    rows = [{"image": {"bytes": None, "path": "images/a.png"}, "question": "q1", "answer": "a1"},
            {"image": {"bytes": None, "path": "../../outside.png"}, "question": "q2", "answer": "a2"},
            {"image": {"bytes": None, "path": "images/missing.png"}, "question": "q3", "answer": "a3"},
            {"image": None, "question": "q4", "answer": "a4"},
            {"image": {"bytes": b"", "path": "images/a.png"}, "question": "q5", "answer": "a5"}]
    _write(root / "data" / "validation-00000-of-00001.parquet", rows)
    result = HFVQASource(root).load()
    assert [r.record_id for r in result.records] == ["val/000000"]
    assert result.records[0].image == image() and result.records[0].meta["image_path"] == "data/images/a.png"
    reasons = {b.record_id: (b.field, b.reason) for b in result.bad}
    assert reasons["val/000001"][0] == "image.path" and "escapes the dataset root" in reasons["val/000001"][1]
    assert reasons["val/000002"][0] == "image" and "file not found" in reasons["val/000002"][1]
    assert reasons["val/000003"] == ("image", "missing (null)")
    assert reasons["val/000004"] == ("image", "empty (0 bytes)")  # not "file not found", nor the path's file


def test_bad_rows_are_quarantined_and_the_rest_loads(tmp_path):
    root = tmp_path / "ds"
    # A string column holding non-UTF-8 bytes, as a writer that skips validation leaves it.
    questions = pa.array([b"fine?", b"caf\xe9?", b"", b"x" * 9000, b"also fine?"], type=pa.binary())
    questions = pa.Array.from_buffers(pa.string(), len(questions), questions.buffers())
    good = image(fmt="PNG")
    images = pa.array([{"bytes": good, "path": None}, {"bytes": good, "path": None}, {"bytes": good, "path": None},
                       {"bytes": good, "path": None}, {"bytes": good[:200], "path": None}], type=IMAGE)
    table = pa.Table.from_arrays([images, questions, pa.array(["yes"] * 5)], schema=SCHEMA)
    (root / "data").mkdir(parents=True)
    pq.write_table(table, root / "data" / "train-00000-of-00003.parquet")
    _write(root / "data" / "train-00001-of-00003.parquet",
           [{"image": {"bytes": good, "path": None}, "answer": "no"}],
           pa.schema([pa.field("image", IMAGE), pa.field("answer", pa.string())]))
    _write(root / "data" / "train-00002-of-00003.parquet",
           [{"image": {"bytes": good, "path": None}, "question": "q", "answer": 3}],
           pa.schema([pa.field("image", IMAGE), pa.field("question", pa.string()), pa.field("answer", pa.int64())]))
    (root / "data" / "train-junk.parquet").write_bytes(b"PAR1 not really")
    result = HFVQASource(root).load()
    assert [r.record_id for r in result.records] == ["train/000000"]
    got = {(b.record_id, b.field): b.reason for b in result.bad}
    assert got[("train/000001", "question")] == "not valid UTF-8 (byte 0xe9 at offset 3)"
    assert got[("train/000002", "question")] == "empty"
    assert got[("train/000003", "question")].startswith("9,000 characters, over the limit of 8,192")
    assert got[("train/000004", "image")].startswith("truncated PNG")
    assert got[("data/train-00001-of-00003.parquet", "question")].startswith("missing column 'question'")
    assert got[("data/train-00002-of-00003.parquet", "answer")] == "column 'answer' has type int64, expected string"
    assert got[("data/train-junk.parquet", "file")].startswith("not a readable parquet file")
    assert len(result.bad) == 7 and all(b.source == "hf_vqa" for b in result.bad)


def test_slake_mirror_columns_become_types_and_meta(tmp_path):
    schema = pa.schema([*SCHEMA, pa.field("answer_type", pa.string()), pa.field("content_type", pa.string()),
                        pa.field("q_lang", pa.string()), pa.field("qid", pa.int64())])
    _write(tmp_path / "test.parquet", [{**_row("Which organ is abnormal?", "Lung"), "answer_type": "OPEN",
                                       "content_type": "Abnormality", "q_lang": "en", "qid": 11934}], schema)
    (record,) = HFVQASource(tmp_path / "test.parquet").load().records
    assert isinstance(record, Record)
    assert (record.record_id, record.split, record.answer_type, record.question_type) == ("test/11934", "test", "open", "abnormality")
    assert record.meta["q_lang"] == "en"


def test_non_utf8_image_path_inside_the_struct_costs_one_row(tmp_path):
    paths = pa.array([b"a.jpg", b"\xff.jpg"], type=pa.binary())
    paths = pa.Array.from_buffers(pa.string(), 2, paths.buffers())
    images = pa.StructArray.from_arrays([pa.array([image(), image()], type=pa.binary()), paths], fields=list(IMAGE))
    table = pa.Table.from_arrays([images, pa.array(["q1", "q2"]), pa.array(["a1", "a2"])], schema=SCHEMA)
    pq.write_table(table, tmp_path / "train.parquet")
    result = HFVQASource(tmp_path).load()
    assert [r.record_id for r in result.records] == ["train/000000"]
    assert [(b.record_id, b.field, b.reason) for b in result.bad] == [
        ("train/000001", "image", "text inside is not valid UTF-8 (byte 0xff)")]
