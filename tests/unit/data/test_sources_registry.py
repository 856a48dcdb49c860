"""The source registry: every configurable kind is registered, detection picks the right layout."""
import typing

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medpo_ray.config import DataConfig
from medpo_ray.data.sources import SOURCES, UnknownSourceError, detect_kind, open_source
from medpo_ray.data.sources.base import RecordSource

pytestmark = pytest.mark.unit


def test_every_configurable_source_is_registered():
    kinds = typing.get_args(DataConfig.model_fields["source"].annotation)
    assert set(SOURCES) == set(kinds)
    for kind in kinds:
        assert issubclass(SOURCES[kind], RecordSource) and SOURCES[kind].kind == kind


def test_detection_by_layout(tmp_path, embedded_dir):
    assert detect_kind(embedded_dir) == "embedded"
    vqa = tmp_path / "vqa.parquet"
    pq.write_table(pa.table({"image": [b"x"], "question": ["q"], "answer": ["a"]}), vqa)
    assert detect_kind(vqa) == "hf_vqa"
    (tmp_path / "slake" / "imgs").mkdir(parents=True)
    (tmp_path / "slake" / "train.json").write_text("[]")
    assert detect_kind(tmp_path / "slake") == "slake"
    (tmp_path / "iu").mkdir()
    (tmp_path / "iu" / "1.xml").write_text('<?xml version="1.0"?><eCitation><uId id="CXR1"/></eCitation>')
    assert detect_kind(tmp_path / "iu") == "iu_xray"
    (tmp_path / "mimic" / "files" / "p10" / "p10000032").mkdir(parents=True)
    (tmp_path / "mimic" / "files" / "p10" / "p10000032" / "s50414267.txt").write_text("FINDINGS: none")
    assert detect_kind(tmp_path / "mimic") == "mimic_cxr"
    (tmp_path / "boxes.csv").write_text("dicom_id,category_name,label_text,path,x,y,w,h\n")
    assert detect_kind(tmp_path / "boxes.csv") == "box_csv"


def test_unknown_kind_and_layout_are_clear_errors(tmp_path):
    with pytest.raises(UnknownSourceError, match="unknown dataset kind 'coco'; known kinds: embedded, hf_vqa"):
        open_source("coco", tmp_path)
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UnknownSourceError, match="cannot tell the dataset kind of"):
        detect_kind(tmp_path / "table.csv")
    with pytest.raises(UnknownSourceError, match="dataset path not found"):
        open_source("hf_vqa", tmp_path / "missing")
