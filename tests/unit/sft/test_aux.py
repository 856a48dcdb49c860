"""The auxiliary lesion-cell target: lesion fraction per cell against hand-made masks, the processor's cell
order, and the head's hook on the real vision tower."""
import numpy as np
import pytest

from medpo_ray.sft.collate import lesion_cells

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
