"""SFT collation: loss only on the answer and its end-of-turn token; bad records named and skipped."""
import dataclasses

import numpy as np
import pytest

from medpo_ray.models.inputs import encode_completion
from medpo_ray.sft.collate import IGNORE_INDEX, collate, end_of_turn_id, prepare

pytestmark = pytest.mark.unit


def test_labels_hold_exactly_the_target_and_eos(records, processor):
    batch_records = [next(r for r in records if r.task == "report"), *[r for r in records if r.task == "vqa"][:3]]
    items, bad = prepare(batch_records, processor, max_length=512)
    assert not bad
    batch = collate(items, processor)
    eos = end_of_turn_id(processor.tokenizer)
    assert processor.tokenizer.convert_ids_to_tokens(eos) == "<|im_end|>"
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for row, rec in enumerate(batch_records):
        labels = batch["labels"][row].tolist()
        ids = batch["input_ids"][row].tolist()
        kept = [k for k, v in enumerate(labels) if v != IGNORE_INDEX]
        assert kept == list(range(kept[0], kept[-1] + 1))  # one contiguous answer span
        assert [labels[k] for k in kept] == encode_completion(processor, rec.target) + [eos]
        assert [ids[k] for k in kept] == [labels[k] for k in kept]
        assert processor.tokenizer.decode([labels[k] for k in kept[:-1]]) == rec.target
        # Everything before the answer (system, image placeholders, question, assistant header) is masked.
        assert image_id in ids[:kept[0]]
        assert all(v == IGNORE_INDEX for v in labels[:kept[0]] + labels[kept[-1] + 1:])
        assert batch["attention_mask"][row, kept[-1]] == 1


def test_bad_records_are_named_and_the_rest_kept(records, processor):
    good = [r for r in records if r.task == "vqa"][:2]
    broken = [
        dataclasses.replace(good[0], record_id="bad-image", image=b"not an image"),
        dataclasses.replace(good[0], record_id="bad-target", target="   "),
        dataclasses.replace(good[0], record_id="bad-mask", lesion_mask=b"\x89PNG broken"),
        dataclasses.replace(next(r for r in records if r.task == "report"), record_id="too-long"),
    ]
    items, bad = prepare([*broken, *good], processor, max_length=60)
    assert [it.record_id for it in items] == [r.record_id for r in good]
    assert {(b.record_id, b.field) for b in bad} == {("bad-image", "image"), ("bad-target", "target"),
                                                      ("bad-mask", "lesion_mask"), ("too-long", "prompt")}
    too_long = next(b for b in bad if b.record_id == "too-long")
    assert "too-long" in str(too_long) and "max_model_len is 60" in too_long.reason


def test_without_masks_no_cell_takes_part(records, processor):
    items, _ = prepare([r for r in records if r.task == "vqa"][:2], processor, 512, with_masks=False)
    batch = collate(items, processor)
    assert batch["cell_targets"].shape == batch["cell_valid"].shape == (2 * 16,)
    assert not batch["cell_valid"].any()


def test_cell_targets_follow_each_items_mask(records, processor):
    with_lesions = [r for r in records if r.task == "report" and r.findings["total"] > 0][:3]
    items, _ = prepare(with_lesions, processor, 512)
    batch = collate(items, processor)
    from medpo_ray.sft.collate import lesion_cells

    expected = np.concatenate([lesion_cells(it.mask, 4, 4).reshape(-1) for it in items])
    assert batch["cell_valid"].all()
    assert np.array_equal(batch["cell_targets"].numpy(), expected.astype(np.float32))
    for k, rec in enumerate(with_lesions):
        # Every lesion's centre pixel lies in a positive cell (cells are 28 x 28 at 112 px).
        cells = expected[16 * k:16 * (k + 1)].reshape(4, 4)
        assert all(cells[les["cy"] // 28, les["cx"] // 28] for les in rec.findings["lesions"])
