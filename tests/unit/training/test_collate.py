import dataclasses

import pytest
import torch

from medpo_ray.config import LossConfig
from medpo_ray.models.loading import load_policy, load_processor, vision_token_ids
from medpo_ray.training.collate import collate
from tests.unit.training.examples import make_examples

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    model = load_policy(tiny_model_dir)
    return (load_processor(tiny_model_dir), vision_token_ids(tiny_model_dir), model.config.image_token_id,
            model)


def test_rows_images_and_masks_line_up_and_the_model_runs_them(setup):
    processor, vision, image_id, model = setup
    examples = make_examples(2)
    c = collate(examples, processor, LossConfig(), vision, image_id)
    b = c.batch
    assert c.bad == [] and b.record_ids == [e.record_id for e in examples]
    rows = b.input_ids.shape[0]
    assert rows == 8  # (x,y+), (x,y-), (x~,y-), (x~,y+) for each example
    assert c.inputs["image_grid_thw"].shape[0] == rows
    per_row = c.inputs["mm_token_type_ids"].sum(-1)
    merged = c.inputs["image_grid_thw"].prod(-1) // 4  # 2x2 patches merge into one token
    assert torch.equal(per_row, merged) and per_row.min() > 0
    assert not (c.inputs["mm_token_type_ids"].bool() & b.completion_mask.bool()).any()
    # Row 2k uses image row_image[k]: the x~ rows carry the corrupted pixels, the x rows the clean ones.
    patches = c.inputs["pixel_values"].split(c.inputs["image_grid_thw"].prod(-1).tolist())
    from medpo_ray.models.inputs import open_image

    for r in range(rows):
        ex = examples[int(b.row_example[r])]
        raw = ex.image if int(b.row_image[r]) < len(examples) else ex.corrupt_image
        want = processor.image_processor(images=[open_image(raw)], return_tensors="pt")["pixel_values"]
        assert torch.equal(patches[r], want)
    with torch.no_grad():
        logits = model(**c.inputs).logits
    assert logits.shape[:2] == b.input_ids.shape and torch.isfinite(logits).all()


def test_pairs_follow_the_loss_and_missing_x_tilde(setup):
    processor, vision, image_id, _ = setup
    examples = make_examples(2)
    examples[1] = dataclasses.replace(examples[1], corrupt_image=None)
    c = collate(examples, processor, LossConfig(), vision, image_id)
    assert c.batch.input_ids.shape[0] == 6 and c.batch.has_corrupt.tolist() == [True, False]
    c = collate(examples, processor, LossConfig.from_preset("dpo"), vision, image_id)
    assert c.batch.input_ids.shape[0] == 4  # no visual term: clean rows only


def test_bad_examples_are_named_and_the_rest_kept(setup):
    processor, vision, image_id, _ = setup
    good, broken, spelled = make_examples(3)
    broken = dataclasses.replace(broken, image=b"\x89PNG truncated")
    spelled = dataclasses.replace(spelled, y_plus=spelled.y_plus + " <|image_pad|>")
    c = collate([good, broken, spelled], processor, LossConfig(), vision, image_id)
    assert c.batch.record_ids == [good.record_id]
    assert [(b.record_id, b.field) for b in c.bad] == [(broken.record_id, "image"), (spelled.record_id, "y_plus")]
    assert "cannot be decoded" in c.bad[0].reason
    none = collate([broken], processor, LossConfig(), vision, image_id)
    assert none.batch is None and none.inputs == {} and len(none.bad) == 1
