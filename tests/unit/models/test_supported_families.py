"""A model directory of an architecture medpo-ray cannot train is refused by name before anything starts."""
from __future__ import annotations

import json

import pytest

from driver.cli import main
from medpo_ray.models.families import SUPPORTED_MODEL_TYPES
from medpo_ray.models.loading import ModelDirError, check_model_dir

pytestmark = pytest.mark.unit


def _model_dir(root, model_type):
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"model_type": model_type, "architectures": ["X"]}))
    for name in ("model.safetensors", "tokenizer.json", "preprocessor_config.json"):
        (root / name).write_bytes(b"{}")
    return root


def test_an_unsupported_architecture_is_named_with_the_supported_list(tmp_path):
    bad = _model_dir(tmp_path / "llama", "llama")
    with pytest.raises(ModelDirError, match=r"model_type 'llama' is not supported; medpo-ray trains qwen2_vl") as e:
        check_model_dir(bad)
    assert all(name in str(e.value) for name in ("qwen2_5_vl", "qwen3_vl", "llava"))
    assert check_model_dir(_model_dir(tmp_path / "ok", SUPPORTED_MODEL_TYPES[0])) == tmp_path / "ok"


def test_train_refuses_it_before_ray_starts(tmp_path, capsys):
    bad = _model_dir(tmp_path / "idefics", "idefics3")
    missing = tmp_path / "no-data-yet"  # refused before the dataset would be generated here
    assert main(["train", "--config", "configs/demo.yaml", "--set", f"model.path={bad}",
                 "--set", f"data.path={missing}"]) == 2
    assert not missing.exists()
    err = capsys.readouterr().err
    assert "model_type 'idefics3' is not supported" in err and "Traceback" not in err
