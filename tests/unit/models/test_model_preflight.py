"""A model directory's own faults are named before Ray starts: no chat template, a template that renders no
image placeholder, LoRA targets that match no layer, more GPUs asked for than there are."""
from __future__ import annotations

import json
import shutil

import pytest

from driver.cli import main
from medpo_ray.config import Config
from medpo_ray.models.corpus import grammar_texts
from medpo_ray.models.factory import build_model
from medpo_ray.models.loading import ModelDirError
from medpo_ray.models.preflight import check_chat_template, check_gpus, check_lora_targets
from medpo_ray.models.presets import get_preset

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "model"
    build_model(out, get_preset("tiny"), grammar_texts(studies=40))
    return out


def _without_template(src, dest):
    shutil.copytree(src, dest)
    for f in dest.glob("chat_template.*"):
        f.unlink()
    for name in ("tokenizer_config.json", "processor_config.json"):
        if (dest / name).is_file():
            data = json.loads((dest / name).read_text())
            data.pop("chat_template", None)
            (dest / name).write_text(json.dumps(data))
    return dest


def test_a_model_without_a_chat_template_is_named(tiny, tmp_path):
    check_chat_template(tiny)
    bare = _without_template(tiny, tmp_path / "bare")
    with pytest.raises(ModelDirError, match="has no chat template"):
        check_chat_template(bare)


def test_a_template_that_drops_the_image_is_named(tiny, tmp_path):
    textonly = _without_template(tiny, tmp_path / "textonly")
    (textonly / "chat_template.jinja").write_text(
        "{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
        "{% endfor %}{% endfor %}")
    with pytest.raises(ModelDirError, match=r"renders 0 image placeholder\(s\) '<\|image_pad\|>'"):
        check_chat_template(textonly)


def test_lora_targets_that_match_no_layer_are_named_with_the_layers_there_are(tiny):
    cfg = Config.model_validate({"train": {"finetune": "lora", "lora_targets": ["q_proj", "v_proj"]}})
    check_lora_targets(tiny, cfg)
    cfg = Config.model_validate({"train": {"finetune": "lora", "lora_targets": ["query", "value"]}})
    with pytest.raises(ModelDirError, match=r"train.lora_targets \['query', 'value'\] match no layer") as e:
        check_lora_targets(tiny, cfg)
    assert "q_proj" in str(e.value) and "down_proj" in str(e.value)


def test_more_gpus_than_there_are_is_named_with_the_keys():
    cfg = Config.model_validate({"rollout": {"gpus_per_engine": 1}, "train": {"num_learners": 2, "gpus_per_rank": 1}})
    check_gpus(cfg, 3)
    with pytest.raises(ModelDirError, match=r"asks for 3 GPU\(s\) .*train.gpus_per_rank 1\) but 0 can be placed"):
        check_gpus(cfg, 0)


def test_train_refuses_them_before_ray_starts(tiny, tmp_path, capsys):
    import ray

    bare = _without_template(tiny, tmp_path / "bare")
    for override in (f"model.path={bare}", f"model.path={tiny}"):
        extra = [] if "bare" in override else ["--set", "train.gpus_per_rank=1"]
        assert main(["train", "--config", "configs/demo.yaml", "--set", override, "--set",
                     f"data.path={tmp_path / 'data'}", "--set", "data.studies=40", *extra]) == 2
        assert not ray.is_initialized()
    err = capsys.readouterr().err
    assert "has no chat template" in err and "GPU(s)" in err and "Traceback" not in err


def test_the_gpu_recipe_is_the_papers_lora_on_eight_gpus():
    from medpo_ray.config import load_config
    from medpo_ray.models.preflight import gpus_needed

    cfg = load_config("configs/gpu-7b.yaml")
    t = cfg.train
    assert (t.finetune, t.lora_r, t.lora_alpha, t.lora_dropout, t.train_vision, t.bf16) == \
        ("lora", 128, 256, 0.05, False, True)
    assert cfg.model.dtype == "bfloat16" and gpus_needed(cfg) == 8
    check_gpus(cfg, 8)
