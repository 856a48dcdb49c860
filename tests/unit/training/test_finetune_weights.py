import pytest
import torch

from medpo_ray.config import TrainConfig
from medpo_ray.errors import MedpoError
from medpo_ray.models.loading import load_policy
from medpo_ray.training.finetune import is_lora, language_model_path, prepare_policy, vision_modules
from medpo_ray.training.weights import full_state_dict, load_into, merged_state_dict

pytestmark = pytest.mark.unit


def test_full_finetune_freezes_vision_unless_asked(tiny_model_dir):
    model = prepare_policy(load_policy(tiny_model_dir), TrainConfig(finetune="full"))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("model.visual.") for n in frozen)
    assert len(frozen) == sum(1 for _ in vision_modules(model)[0].parameters())
    model = prepare_policy(load_policy(tiny_model_dir), TrainConfig(finetune="full", train_vision=True))
    assert all(p.requires_grad for p in model.parameters())


def test_lora_adapts_only_the_language_model(tiny_model_dir):
    train = TrainConfig(finetune="lora", lora_r=4, lora_alpha=8, lora_targets=["q_proj", "down_proj"])
    model = prepare_policy(load_policy(tiny_model_dir), train)
    assert is_lora(model) and language_model_path(model.get_base_model()) == "model.language_model"
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n and ".language_model." in n for n in trainable)
    assert {n.split(".lora_")[0].rsplit(".", 1)[1] for n in trainable} == {"q_proj", "down_proj"}
    with pytest.raises(MedpoError, match="lora_targets"):
        prepare_policy(load_policy(tiny_model_dir), TrainConfig(finetune="lora", lora_targets=["no_such_proj"]))


def test_merged_export_equals_peft_merge_and_leaves_the_model_alone(tiny_model_dir):
    torch.manual_seed(0)
    model = prepare_policy(load_policy(tiny_model_dir), TrainConfig(finetune="lora", lora_r=4, lora_alpha=16))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.1)  # lora_B starts at zero; make the delta real
    before = {k: v.clone() for k, v in model.state_dict().items()}
    merged = merged_state_dict(model, zero3=False)
    assert {k: v for k, v in model.state_dict().items()}.keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    want = model.merge_and_unload().state_dict()  # peft's own merge, done last: it modifies the model
    assert merged.keys() == want.keys() == load_policy(tiny_model_dir).state_dict().keys()
    assert max((merged[k] - want[k]).abs().max().item() for k in want) < 1e-6
    assert not torch.equal(merged["model.language_model.layers.0.self_attn.q_proj.weight"],
                           before["base_model.model.model.language_model.layers.0.self_attn.q_proj.base_layer.weight"])


def test_full_state_dict_and_load_into_roundtrip(tiny_model_dir):
    model = load_policy(tiny_model_dir)
    sd = full_state_dict(model, zero3=False)
    assert sd.keys() == model.state_dict().keys()
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())
    other = load_policy(tiny_model_dir)
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    assert load_into(other, sd, zero3=False) == []
    assert all(torch.equal(other.state_dict()[k], v) for k, v in sd.items())
    name = "lm_head.weight"
    assert load_into(other, {name: sd[name]}, zero3=False, names=[name, "model.visual.patch_embed.proj.weight"]) \
        == ["model.visual.patch_embed.proj.weight"]
    trainable = full_state_dict(prepare_policy(load_policy(tiny_model_dir), TrainConfig()), False, trainable_only=True)
    assert trainable and not any(k.startswith("model.visual.") for k in trainable)
    # views: the same names and values, sharing the live storage instead of copying it
    views = full_state_dict(model, zero3=False, views=True)
    assert list(views) == list(sd) and all(torch.equal(views[k], sd[k]) for k in sd)
    live = dict(model.named_parameters())
    assert all(views[k].data_ptr() == p.data_ptr() for k, p in live.items())
    assert full_state_dict(model, zero3=False, views=True, keep=False) == {}


def test_frozen_names_are_what_training_cannot_change_in_the_export(tiny_model_dir):
    from medpo_ray.training.weights import frozen_names

    full = prepare_policy(load_policy(tiny_model_dir), TrainConfig(finetune="full"))
    frozen = frozen_names(full)
    exported = full_state_dict(full, zero3=False)
    vision = {n for n in exported if n.startswith("model.visual.")}
    assert frozen == vision and frozen <= exported.keys()
    assert frozen_names(prepare_policy(load_policy(tiny_model_dir), TrainConfig(finetune="full", train_vision=True))) \
        == frozenset()
    # LoRA: only the merged weights of adapted layers change; everything else in the export is frozen.
    lora = prepare_policy(load_policy(tiny_model_dir), TrainConfig(finetune="lora", lora_r=4, lora_targets=["q_proj"]))
    merged = merged_state_dict(lora, zero3=False)
    changing = merged.keys() - frozen_names(lora)
    assert frozen_names(lora) <= merged.keys()
    assert changing == {n for n in merged if n.endswith("self_attn.q_proj.weight")}
