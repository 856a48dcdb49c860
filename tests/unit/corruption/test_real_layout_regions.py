"""A real layout reaches the corruption service with what it carries: SLAKE's lesion mask is used, its
detection boxes when an image has no mask, and an image with neither (as every HF VQA parquet record, e.g.
VQA-RAD) falls back to whole-image noise, said so in the note the metrics and the audit trail read."""
import json

import pytest

from medpo_ray.corruption import corrupt_records
from medpo_ray.data.sources import open_source
from tests.unit.data.layouts import image, mask

pytestmark = pytest.mark.unit


def _slake(root):
    entries = []
    for n, files in enumerate(({"mask.png": mask(40, 30)}, {"detection.json": json.dumps([{"Nodule": [5, 6, 8, 8]}])},
                               {})):
        folder = root / "imgs" / f"xmlab{n}"
        folder.mkdir(parents=True)
        (folder / "source.jpg").write_bytes(image(40, 30, fmt="JPEG", seed=n))
        for name, data in files.items():
            (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())
        entries.append({"img_id": n, "img_name": f"xmlab{n}/source.jpg", "question": "Is there a nodule?",
                        "answer": "Yes", "q_lang": "en", "answer_type": "CLOSED", "content_type": "Abnormality",
                        "qid": n})
    (root / "train.json").write_text(json.dumps(entries))
    return root


def test_each_record_is_corrupted_where_its_layout_says_the_lesion_is(tmp_path):
    result = open_source("slake", _slake(tmp_path / "slake")).load()
    assert not result.bad
    done, bad = corrupt_records(result.records)
    assert not bad
    regions = {c.record_id: c.note["region"] for c in done}
    assert regions == {"train/0": "mask", "train/1": "boxes", "train/2": "whole"}
    assert {c.note["mode"] for c in done if c.note["region"] == "whole"} == {"noise"}
