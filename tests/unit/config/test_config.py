import re

import pytest

from medpo_ray.config import PRESETS, Config, ConfigError, LossConfig, load_config, parse_override

pytestmark = pytest.mark.unit


def test_demo_recipe_loads_and_matches_paper_defaults_but_the_nll_anchor():
    cfg = load_config("configs/demo.yaml")
    assert cfg.data.source == "embedded"
    loss = cfg.loss
    # LOSS.md (d): the paper's defaults, plus the NLL anchor on y+ that the study chose (RESULTS.md).
    assert (loss.beta, loss.gamma, loss.lam, loss.alpha) == (0.1, 0.1, 0.5, 0.01)
    assert (loss.omega_e, loss.omega_u, loss.z, loss.kl_scope, loss.vis_mode) == (1.0, 0.0, "sum", "edited", "reverse")
    assert (loss.eps, loss.eta, loss.rho_nll) == (0.0, 0.0, 1.0)
    assert LossConfig.from_preset("fire_mpo").rho_nll == 0.0  # the preset itself stays the paper's


def test_overrides_are_typed_by_yaml():
    cfg = load_config("configs/demo.yaml", ["train.steps=7", "loss.beta=0.5", "train.finetune=lora",
                                            "sft.aux_lesion_loss=false"])
    assert cfg.train.steps == 7 and cfg.loss.beta == 0.5 and cfg.train.finetune == "lora"
    assert cfg.sft.aux_lesion_loss is False


def test_unknown_key_names_the_key_and_the_allowed_ones():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.stepz=3"])
    msg = str(e.value)
    assert "train.stepz" in msg and "unknown key" in msg and "steps" in msg and "batch_size" in msg


def test_unknown_section_is_rejected():
    with pytest.raises(ConfigError, match=r"trian: unknown key; allowed keys here: run, data"):
        load_config(None, ["trian.steps=3"])


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.steps=many"])
    assert "train.steps" in str(e.value) and "'many'" in str(e.value)


def test_out_of_range_names_key_and_bound():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["loss.lam=1.5"])
    assert "loss.lam" in str(e.value) and "less than or equal to 1" in str(e.value)


def test_literal_lists_allowed_values():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["loss.kl_scope=everything"])
    msg = str(e.value)
    assert "loss.kl_scope" in msg and "'edited'" in msg and "'all'" in msg and "'edited_both'" in msg


def test_bad_yaml_file_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(scalar)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("train.steps")
    with pytest.raises(ConfigError, match="is a value, not a section"):
        load_config(None, ["train.steps=3", "train.steps.x=1"])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_fill_their_knobs(name):
    cfg = LossConfig.from_preset(name)
    for key, value in PRESETS[name].items():
        assert getattr(cfg, key) == value


def test_explicit_keys_win_over_the_preset():
    cfg = load_config(None, ["loss.preset=dpo", "loss.beta=0.3"]).loss
    assert cfg.beta == 0.3 and cfg.omega_u == 1.0 and cfg.gamma == 0.0


def test_config_defaults_validate():
    assert Config().train.max_staleness == 0


def test_per_stage_deadlines_override_the_default_and_name_bad_stages():
    cfg = load_config(None, ["train.stage_deadline_s=120", "train.stage_deadlines.editor=6"])
    assert cfg.train.deadline_s("editor") == 6 and cfg.train.deadline_s("rollout") == 120
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.stage_deadlines.critic=6"])
    assert "train.stage_deadlines.critic" in str(e.value) and "'editor'" in str(e.value)
    with pytest.raises(ConfigError, match=r"train.stage_deadlines.rollout: Input should be greater than 0"):
        load_config(None, ["train.stage_deadlines.rollout=0"])


@pytest.mark.parametrize(("text", "says"), [
    ("train:\n  steps: 3\n  steps: 4\n", "key 'steps' is given twice (first on line 2)"),
    ("train:\n  steps: 3\ntrain:\n  lr: 0.1\n", "key 'train' is given twice"),
    ("loss:\n  beta: .inf\n", "loss.beta: Input should be a finite number"),
    ("loss:\n  mu: .nan\n", "loss.mu: Input should be a finite number"),
])
def test_duplicate_keys_and_non_finite_numbers_are_refused_by_name(tmp_path, text, says):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_config(path)
