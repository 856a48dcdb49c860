"""The SFT loop on the tiny policy: a few steps lower the loss, the schedule, and the saved checkpoint is a
plain Qwen2-VL (no aux head) that transformers loads."""
import json

import pytest

from medpo_ray.config import SFTConfig
from medpo_ray.sft.train import BatchMixer, lr_factor, train_sft

pytestmark = pytest.mark.unit


def _mean_loss(model_dir, records):
    import torch

    from medpo_ray.models.loading import load_policy, load_processor
    from medpo_ray.sft.collate import collate, prepare

    processor = load_processor(model_dir)
    items, _ = prepare(records, processor, 512, with_masks=False)
    batch = collate(items, processor)
    for key in ("cell_targets", "cell_valid"):
        batch.pop(key)
    with torch.no_grad():
        return float(load_policy(model_dir)(**batch).loss)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, records, model_dir):
    train = [r for r in records if r.split == "train"][:24]
    cfg = SFTConfig(steps=12, batch_size=8, lr=3e-3, warmup_steps=2, max_seconds=300)
    out = tmp_path_factory.mktemp("sft_out")
    stats = train_sft(model_dir, train, cfg, out, seed=0, progress=False)
    return train, out, stats


def test_a_few_steps_lower_the_loss(trained, model_dir):
    train, out, stats = trained
    assert stats["steps"] == 12 and stats["stopped_by"] == "steps"
    assert stats["aux_lesion_loss"] and stats["aux_loss"] is not None
    before, after = _mean_loss(model_dir, train[:8]), _mean_loss(out, train[:8])
    assert after < 0.7 * before, (before, after)


def test_saved_checkpoint_has_no_aux_head_and_loads(trained, model_dir):
    from medpo_ray.models.loading import checkpoint_manifest, load_policy, load_processor

    _, out, stats = trained
    assert checkpoint_manifest(out) == checkpoint_manifest(model_dir)  # same tensors: nothing added
    model = load_policy(out)
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"
    assert load_processor(out).tokenizer.get_vocab() == load_processor(model_dir).tokenizer.get_vocab()
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == load_processor(out).tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert json.loads((out / "sft_stats.json").read_text())["steps"] == stats["steps"]


def test_size_level_target_trains_and_the_checkpoint_stays_plain(tmp_path, levels_records, model_dir):
    from medpo_ray.models.loading import checkpoint_manifest

    train = [r for r in levels_records if r.split == "train"][:16]
    cfg = SFTConfig(steps=3, batch_size=4, warmup_steps=0, max_seconds=300, aux_size_levels=True)
    stats = train_sft(model_dir, train, cfg, tmp_path, seed=0, progress=False)
    assert stats["aux_lesion_loss"] and stats["aux_size_levels"] == [4.0, 9.0, 14.0]
    assert stats["aux_loss"] is not None
    assert checkpoint_manifest(tmp_path) == checkpoint_manifest(model_dir)  # the head is not saved


def test_time_budget_stops_training(tmp_path, records, model_dir):
    cfg = SFTConfig(steps=10_000, batch_size=2, max_seconds=0.5, aux_lesion_loss=False)
    stats = train_sft(model_dir, [r for r in records if r.task == "vqa"][:4], cfg, tmp_path, progress=False)
    assert stats["stopped_by"] == "time" and 1 <= stats["steps"] < 10_000
    assert not stats["aux_lesion_loss"] and stats["items_by_task"] == {"report": 0, "vqa": 4}


def test_schedule_warms_up_then_anneals_by_steps_or_time():
    cfg = SFTConfig(steps=110, warmup_steps=10, max_seconds=100)
    assert lr_factor(0, 0, cfg) == pytest.approx(1 / 11)
    assert lr_factor(10, 0, cfg) == pytest.approx(1.0)
    assert lr_factor(60, 0, cfg) == pytest.approx(0.5)  # half the post-warmup steps
    assert lr_factor(20, 50, cfg) == pytest.approx(0.5)  # half the time budget is further along
    assert lr_factor(109, 100, cfg) == pytest.approx(0.0)


def test_batches_mix_reports_and_vqa_and_repeat_for_a_seed(records):
    from medpo_ray.sft.collate import SFTItem

    items = [SFTItem(r.record_id, r.task, None, r.prompt, (1,), None) for r in records]
    a, b = BatchMixer(items, 8, 0.25, seed=3), BatchMixer(items, 8, 0.25, seed=3)
    batches = [a.next() for _ in range(40)]
    assert all(sum(it.task == "report" for it in batch) == 2 and len(batch) == 8 for batch in batches)
    assert [[it.record_id for it in x] for x in batches[:5]] == [[it.record_id for it in b.next()] for _ in range(5)]
    reports = [it for batch in batches for it in batch if it.task == "report"]
    assert len({it.record_id for it in reports}) == len([r for r in records if r.task == "report"])  # epochs cover all
    only_vqa = BatchMixer([it for it in items if it.task == "vqa"], 8, 0.25, seed=0).next()
    assert len(only_vqa) == 8 and all(it.task == "vqa" for it in only_vqa)
