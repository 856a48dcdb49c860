"""Opening model directories: clear errors naming what is missing; the two weight-name layouts."""
import shutil

import pytest

from medpo_ray.models.loading import (
    ModelDirError,
    check_model_dir,
    checkpoint_manifest,
    parameter_layouts,
    vision_token_ids,
)

pytestmark = pytest.mark.unit


def test_missing_directory_says_how_to_make_one(tmp_path):
    with pytest.raises(ModelDirError, match="does not exist.*medpo-ray model tiny"):
        check_model_dir(tmp_path / "absent")


def test_incomplete_directory_names_every_missing_part(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").unlink()
    (broken / "tokenizer.json").unlink()
    with pytest.raises(ModelDirError) as e:
        check_model_dir(broken)
    assert "safetensors" in str(e.value) and "tokenizer" in str(e.value)
    assert "config.json" not in str(e.value)


def test_corrupt_weights_file_is_named(tiny_model_dir, tmp_path):
    broken = tmp_path / "corrupt"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModelDirError, match="model.safetensors"):
        checkpoint_manifest(broken)


def test_checkpoint_and_module_layouts_hold_the_same_tensors(tiny_model_dir, tiny_policy):
    model, _ = tiny_policy
    layouts = parameter_layouts(tiny_model_dir)
    assert layouts["module"] == {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert sorted(layouts["checkpoint"].values()) == sorted(layouts["module"].values())
    assert "model.language_model.embed_tokens.weight" in layouts["module"]
    assert "model.embed_tokens.weight" in layouts["checkpoint"]


def test_vision_token_ids_are_the_processor_placeholders(tiny_model_dir, tiny_policy):
    _, processor = tiny_policy
    tok = processor.tokenizer
    expected = {tok.convert_tokens_to_ids(t) for t in
                ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}
    assert vision_token_ids(tiny_model_dir) == expected
