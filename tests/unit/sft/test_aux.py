"""The auxiliary lesion-cell target: lesion fraction per cell against hand-made masks, the processor's cell
order, and the head's hook on the real vision tower."""
import numpy as np
import pytest

from medpo_ray.sft.collate import lesion_cell_levels, lesion_cells

pytestmark = pytest.mark.unit


def test_cells_of_a_hand_made_mask():
    mask = np.zeros((112, 112), bool)
    mask[30:34, 60:63] = True  # rows in cell 1 (28..55), columns in cell 2 (56..83)
    cells = lesion_cells(mask, 4, 4)
    assert cells.sum() == 1 and cells[1, 2]
    mask[27:29, 0] = True  # rows 27 and 28 lie in cells (0, 0) and (1, 0)
    cells = lesion_cells(mask, 4, 4)
    assert cells[0, 0] and cells[1, 0] and cells.sum() == 3
    assert lesion_cells(np.ones((112, 112), bool), 4, 4).all()


def test_cells_when_the_grid_does_not_divide_the_image():
    mask = np.zeros((90, 90), bool)  # 22.5 px per cell: pixel row 22 straddles cells 0 and 1
    mask[22, 80] = True
    assert set(zip(*np.nonzero(lesion_cells(mask, 4, 4)), strict=True)) == {(0, 3), (1, 3)}
    assert not lesion_cells(np.zeros((90, 90), bool), 4, 4).any()


def test_cell_order_is_the_processors_merged_patch_order(processor):
    from PIL import Image

    pixels = np.zeros((112, 112), np.uint8)
    pixels[56:84, 28:56] = 255  # cell (2, 1)
    out = processor.image_processor(images=[Image.fromarray(pixels).convert("RGB")], return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, 8, 8]]
    # pixel_values rows come in groups of merge_size**2 patches, one group per merged cell.
    per_cell = out["pixel_values"].reshape(16, -1).mean(dim=1).numpy()
    bright = int(np.argmax(per_cell))
    assert bright == 2 * 4 + 1
    assert np.flatnonzero(lesion_cells(pixels > 0, 4, 4).reshape(-1)).tolist() == [bright]


def test_head_reads_one_feature_row_per_cell_and_detaches(records, processor, model_dir):
    import torch

    from medpo_ray.models.loading import load_policy
    from medpo_ray.sft.aux import LesionCellHead, vision_merger
    from medpo_ray.sft.collate import collate, prepare

    model = load_policy(model_dir).train()
    head = LesionCellHead(model)
    items, _ = prepare([r for r in records if r.task == "report"][:3], processor, 512)
    batch = collate(items, processor)
    targets, valid = batch.pop("cell_targets"), batch.pop("cell_valid")
    model(**batch)
    loss = head.loss(targets, valid)
    assert torch.isfinite(loss) and loss.requires_grad
    loss.backward()
    assert head.linear.weight.grad is not None
    assert model.model.visual.patch_embed.proj.weight.grad is not None  # the gradient reaches the vision tower
    head.remove()
    assert not vision_merger(model)._forward_hooks


def test_cell_levels_of_a_hand_made_level_map():
    levels = np.full((112, 112), -1, np.int8)
    levels[30:34, 60:63] = 2  # cell (1, 2) only
    levels[0:28, 0:10] = 0  # cell (0, 0): 280 px of level 0 ...
    levels[0:28, 10:12] = 1  # ... and 56 px of level 1: the level with most pixels wins
    cells = lesion_cell_levels(levels, 4, 4)
    assert cells[1, 2] == 2 and cells[0, 0] == 0
    assert (cells >= 0).sum() == 2 and cells.dtype == np.int64
    # The cells with a level are exactly the lesion cells.
    assert np.array_equal(cells >= 0, lesion_cells(levels >= 0, 4, 4))


def test_collate_gives_each_lesion_cell_its_radius_level(levels_records, processor):
    from medpo_ray.sft.collate import collate, prepare
    from medpo_ray.sft.train import radius_levels

    radii = radius_levels(levels_records)
    assert radii == (4.0, 9.0, 14.0)
    with_lesions = [r for r in levels_records if r.task == "report" and r.findings["total"] > 0][:4]
    items, bad = prepare(with_lesions, processor, 512, radii=radii)
    assert not bad
    batch = collate(items, processor)
    levels = batch["cell_levels"].numpy().reshape(len(items), 4, 4)
    assert np.array_equal(levels.reshape(-1) >= 0, batch["cell_targets"].numpy() > 0)
    for k, rec in enumerate(with_lesions):
        for les in rec.findings["lesions"]:  # the centre's cell holds (mostly) this lesion
            if sum(1 for o in rec.findings["lesions"] if o["cy"] // 28 == les["cy"] // 28
                   and o["cx"] // 28 == les["cx"] // 28) == 1:
                assert levels[k, les["cy"] // 28, les["cx"] // 28] in range(3)
        assert {radii[v] for v in levels[k][levels[k] >= 0]} <= {les["r_px"] for les in rec.findings["lesions"]}
    # Without radii (the default) no level target is made.
    assert "cell_levels" not in collate(prepare(with_lesions, processor, 512)[0], processor)


def test_continuous_radii_are_refused_for_size_levels_by_name(records):
    from medpo_ray.sft.collate import SFTDataError
    from medpo_ray.sft.train import radius_levels

    with pytest.raises(SFTDataError, match="sft.aux_size_levels"):
        radius_levels(records)


def test_head_with_levels_adds_a_cross_entropy_and_detaches(levels_records, processor, model_dir):

    from medpo_ray.models.loading import load_policy
    from medpo_ray.sft.aux import LesionCellHead, vision_merger
    from medpo_ray.sft.collate import collate, prepare
    from medpo_ray.sft.train import radius_levels

    model = load_policy(model_dir).train()
    radii = radius_levels(levels_records)
    head = LesionCellHead(model, n_levels=len(radii))
    assert head.linear.out_features == 1 + len(radii)
    reports = [r for r in levels_records if r.task == "report" and r.findings["total"] > 0][:3]
    batch = collate(prepare(reports, processor, 512, radii=radii)[0], processor)
    targets, valid, levels = batch.pop("cell_targets"), batch.pop("cell_valid"), batch.pop("cell_levels")
    model(**batch)
    with_levels = head.loss(targets, valid, levels)
    model(**batch)
    without = head.loss(targets, valid)
    assert float(with_levels.detach()) > float(without.detach()) > 0  # the level cross-entropy is added on top
    with_levels.backward()
    assert head.linear.weight.grad[1:].abs().sum() > 0  # the level logits learn
    head.remove()
    assert not vision_merger(model)._forward_hooks
