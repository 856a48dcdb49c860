import pytest

from medpo_ray.config import ConfigError, TrainConfig, load_config
from medpo_ray.errors import MedpoError
from medpo_ray.training.ds_config import build_ds_config, grad_accumulation_steps, reference_ds_config

pytestmark = pytest.mark.unit


def test_batch_layout_gives_accumulation_steps():
    train = TrainConfig(batch_size=8, num_learners=2, micro_batch=2)
    assert grad_accumulation_steps(train, 2) == 2
    assert grad_accumulation_steps(train, 1) == 4  # the same global batch on one rank
    with pytest.raises(MedpoError, match="world size"):
        grad_accumulation_steps(train, 3)


def test_ds_config_carries_the_train_section():
    train = TrainConfig(batch_size=8, num_learners=2, micro_batch=4, zero_stage=3, bf16=True, grad_clip=0.5)
    cfg = build_ds_config(train, 2)
    assert cfg["train_batch_size"] == 8 and cfg["train_micro_batch_size_per_gpu"] == 4
    assert cfg["gradient_accumulation_steps"] == 1 and cfg["zero_optimization"] == {"stage": 3}
    assert cfg["bf16"] == {"enabled": True} and cfg["gradient_clipping"] == 0.5
    assert cfg["data_types"] == {"grad_accum_dtype": "fp32"}
    assert "data_types" not in build_ds_config(TrainConfig(), 2)
    assert reference_ds_config(train)["zero_optimization"]["stage"] == 3


@pytest.mark.parametrize("override,names", [
    (["train.num_learners=3"], ["train.batch_size", "train.num_learners", "train.micro_batch"]),
    (["train.bf16=true", "train.zero_stage=0"], ["train.bf16", "train.zero_stage"]),
    (["train.adam_betas=[0.9, 1.5]"], ["train.adam_betas"]),
    (["train.cpus_per_rank=0"], ["train.cpus_per_rank"]),
])
def test_bad_train_settings_name_the_fields(override, names):
    with pytest.raises(ConfigError) as e:
        load_config(None, override)
    assert all(n in str(e.value) for n in names), str(e.value)


def test_defaults_and_demo_recipe_validate():
    assert load_config("configs/demo.yaml").train.micro_batch * 2 <= 8
    TrainConfig(finetune="lora", lora_targets=["q_proj"], gpus_per_rank=1, placement_strategy="SPREAD")
