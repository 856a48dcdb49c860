"""SLAKE's original layout: {train,validate,test}.json next to imgs/xmlabN/{source.jpg, mask.png, detection.json}."""
import json

import pytest

from medpo_ray.data.sources import detect_kind, open_source
from medpo_ray.data.sources.slake import SlakeSource, parse_detection
from medpo_ray.data.validate import RecordError
from tests.unit.data.layouts import image, mask

pytestmark = pytest.mark.unit


def _entry(qid, img, question, answer, **extra):
    # Field set and spelling of SLAKE 1.0's question files.
    return {"img_id": int(img.removeprefix("xmlab")), "img_name": f"{img}/source.jpg", "question": question,
            "answer": answer, "q_lang": "en", "location": "Lung", "modality": "CT", "answer_type": "CLOSED",
            "base_type": "vqa", "content_type": "Abnormality", "triple": ["vhead", "_", "_"], "qid": qid, **extra}


@pytest.fixture
def slake(tmp_path):
    root = tmp_path / "Slake1.0"
    for n, (w, h) in {0: (40, 30), 1: (40, 30), 2: (40, 30)}.items():
        folder = root / "imgs" / f"xmlab{n}"
        folder.mkdir(parents=True)
        (folder / "source.jpg").write_bytes(image(w, h, fmt="JPEG", seed=n))
        (folder / "question.json").write_text("[]")
    (root / "imgs" / "xmlab0" / "mask.png").write_bytes(mask(40, 30))
    (root / "imgs" / "xmlab0" / "detection.json").write_text(json.dumps([{"Lung": [2, 3, 20, 10]}, {"Nodule": [5.5, 6, 4, 4]}]))
    (root / "imgs" / "xmlab1" / "mask.png").write_bytes(mask(30, 40))  # transposed: does not match the image
    (root / "imgs" / "xmlab2" / "detection.json").write_text("{not json")
    (root / "mask.txt").write_text("1:Lung\n")
    (root / "train.json").write_text(json.dumps([
        _entry(0, "xmlab0", "Is there a nodule in the left lung?", "Yes"),
        _entry(1, "xmlab0", "肺部有结节吗？", "是", q_lang="zh", answer_type="CLOSED"),
        _entry(2, "xmlab1", "Is the lung healthy?", "No"),
        _entry(3, "xmlab2", "Which organ is shown?", "Lung", answer_type="OPEN"),
        {**_entry(4, "xmlab0", "What modality?", "CT"), "img_name": "../../../etc/passwd"},
        {k: v for k, v in _entry(5, "xmlab0", "Where?", "Left").items() if k != "answer"},
        _entry(6, "xmlab0", "", "Yes"),
    ], ensure_ascii=False))
    (root / "validate.json").write_text(json.dumps([_entry(7, "xmlab0", "Is this a CT?", "Yes")]))
    (root / "test.json").write_text("[{broken")
    return root


def test_layout_is_detected_and_records_carry_mask_boxes_and_types(slake):
    assert detect_kind(slake) == "slake"
    result = SlakeSource(slake).load()
    by_id = {r.record_id: r for r in result.records}
    assert sorted(by_id) == ["train/0", "train/1", "val/7"]
    r = by_id["train/0"]
    assert (r.task, r.prompt, r.target, r.split, r.study_id) == ("vqa", "Is there a nodule in the left lung?", "Yes", "train", "xmlab0")
    assert (r.answer_type, r.question_type) == ("closed", "abnormality")
    assert r.image == image(40, 30, fmt="JPEG", seed=0) and r.lesion_mask == mask(40, 30)
    # detection.json holds [x, y, w, h]; records hold (x0, y0, x1, y1).
    assert r.boxes == ((2.0, 3.0, 22.0, 13.0), (5.5, 6.0, 9.5, 10.0))
    assert r.meta["box_labels"] == ["Lung", "Nodule"] and r.meta["location"] == "Lung"
    assert (by_id["train/1"].prompt, by_id["train/1"].meta["q_lang"]) == ("肺部有结节吗？", "zh")


def test_each_bad_entry_is_named_and_the_rest_loads(slake):
    bad = {b.record_id: (b.field, b.reason) for b in open_source("slake", slake).load().bad}
    assert bad["train/2"] == ("lesion_mask", "mask is 30x40 but the image is 40x30")
    assert bad["train/3"][0] == "detection.json" and bad["train/3"][1].startswith("not valid JSON")
    assert bad["train/4"][0] == "img_name" and "'imgs/../../../etc/passwd' escapes the dataset root" in bad["train/4"][1]
    assert bad["train/5"] == ("answer", "missing in entry 5 of train.json")
    assert bad["train/6"] == ("question", "empty")
    assert bad["test.json"][0] == "file" and "not valid UTF-8 JSON" in bad["test.json"][1]
    assert len(bad) == 6


def test_split_filter_and_missing_image(slake):
    (slake / "imgs" / "xmlab0" / "source.jpg").unlink()
    result = SlakeSource(slake, split="val").load()
    assert result.records == [] and [(b.record_id, b.field) for b in result.bad] == [("val/7", "image")]
    assert "file not found" in result.bad[0].reason


def test_parse_detection_rejects_malformed_boxes():
    assert parse_detection(b'{"Liver": [1, 2, 3, 4]}') == (((1.0, 2.0, 4.0, 6.0),), ("Liver",))
    with pytest.raises(RecordError, match="box of 'Liver' is not"):
        parse_detection(b'[{"Liver": [1, 2, 3]}]')
