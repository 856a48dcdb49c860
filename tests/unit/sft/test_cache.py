"""`medpo-ray sft` caching: the same data, base model and settings reuse the checkpoint without training;
any change of them trains a new one; a dataset made with other knobs is refused by name."""
import json
import os

import pytest

from driver.cli import main

pytestmark = pytest.mark.unit


def _args(tmp_path, data_dir, model_dir, *extra):
    sets = [f"data.path={data_dir}", "data.studies=20", "data.difficulty=0.5", f"model.path={model_dir}",
            "sft.steps=2", "sft.batch_size=4", "sft.warmup_steps=0", f"sft.out_dir={tmp_path / 'sft'}", *extra]
    return ["sft", "--no-eval", *[a for s in sets for a in ("--set", s)]]


def _run(capsys, argv) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_repeat_hits_the_cache_and_a_change_trains_again(tmp_path, capsys, data_dir, model_dir):
    first = _run(capsys, _args(tmp_path, data_dir, model_dir))
    assert not first["cached"] and first["steps"] == 2
    weights = os.path.join(first["checkpoint"], "model.safetensors")
    stamp = os.stat(weights).st_mtime_ns

    again = _run(capsys, _args(tmp_path, data_dir, model_dir))
    assert again["cached"] and again["checkpoint"] == first["checkpoint"]
    assert os.stat(weights).st_mtime_ns == stamp  # nothing was rewritten
    assert again["seconds"] < 5

    other = _run(capsys, _args(tmp_path, data_dir, model_dir, "sft.lr=0.001"))
    assert not other["cached"] and other["checkpoint"] != first["checkpoint"]
    # Only finished checkpoints are left behind (no staging directories).
    assert sorted(p.name for p in (tmp_path / "sft").iterdir()) == sorted(
        os.path.basename(c) for c in (first["checkpoint"], other["checkpoint"]))


def test_force_retrains_in_place(tmp_path, capsys, data_dir, model_dir):
    first = _run(capsys, _args(tmp_path, data_dir, model_dir))
    forced = _run(capsys, [*_args(tmp_path, data_dir, model_dir), "--force"])
    assert not forced["cached"] and forced["checkpoint"] == first["checkpoint"]


def test_a_dataset_made_with_other_knobs_is_refused(tmp_path, capsys, data_dir, model_dir):
    assert main(_args(tmp_path, data_dir, model_dir, "data.difficulty=0.7")) == 2
    err = capsys.readouterr().err
    assert "data.difficulty: dataset has 0.5, config asks 0.7" in err
    assert not (tmp_path / "sft").exists() or not any((tmp_path / "sft").iterdir())


def test_a_dataset_made_without_radius_levels_is_refused_for_levels(tmp_path, capsys, data_dir, model_dir):
    # The fixture's manifest predates the knob (no radius_levels key): it reads as 0, continuous radii.
    assert main(_args(tmp_path, data_dir, model_dir, "data.radius_levels=3")) == 2
    assert "data.radius_levels: dataset has 0, config asks 3" in capsys.readouterr().err


def test_size_level_knob_changes_the_key_only_when_on():
    from medpo_ray.config import load_config
    from medpo_ray.sft.cache import cache_key

    off, on = (load_config(None, [f"sft.aux_size_levels={v}"]) for v in ("false", "true"))
    # The key of the defaults as it was before the knob existed: existing checkpoints stay valid.
    assert cache_key(off, "d", "m") == "1096aeb5756287d4fb88"
    assert cache_key(on, "d", "m") != cache_key(off, "d", "m")
