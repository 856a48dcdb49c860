"""LossConfig: the defaults and named presets of LOSS.md, overrides, and validation at load time."""
import pytest

from medpo_ray.config import PRESETS, ConfigError, LossConfig, load_config

pytestmark = pytest.mark.unit

KNOBS = ("beta", "gamma", "lam", "alpha", "omega_e", "omega_u", "z", "kl_scope", "vis_mode", "eps", "eta", "rho_nll")


def _knobs(cfg):
    return {k: getattr(cfg, k) for k in KNOBS}


def test_defaults_are_the_paper_table():
    assert _knobs(LossConfig()) == {"beta": 0.1, "gamma": 0.1, "lam": 0.5, "alpha": 0.01, "omega_e": 1.0,
                                    "omega_u": 0.0, "z": "sum", "kl_scope": "edited", "vis_mode": "reverse",
                                    "eps": 0.0, "eta": 0.0, "rho_nll": 0.0}


@pytest.mark.parametrize("name, changed", [
    ("fire_mpo", {}),
    ("rrpo", {"gamma": 0.0, "lam": 1.0, "kl_scope": "all"}),
    ("mask_dpo", {"gamma": 0.0, "alpha": 0.0}),
    ("dpo", {"omega_u": 1.0, "gamma": 0.0, "alpha": 0.0}),
    ("ddpo", {"omega_e": 5.0, "omega_u": 1.0, "z": "mean", "beta": 0.5, "gamma": 0.0, "alpha": 0.0}),
    ("mdpo", {"vis_mode": "conditional", "eta": 1.0, "omega_u": 1.0}),
])
def test_each_preset_changes_exactly_its_knobs(name, changed):
    cfg = LossConfig.from_preset(name)
    assert cfg.preset == name and set(PRESETS) == {"fire_mpo", "rrpo", "mask_dpo", "dpo", "ddpo", "mdpo"}
    assert _knobs(cfg) == {**_knobs(LossConfig()), **changed}


def test_explicit_keys_win_over_the_preset_and_recipes_load():
    assert LossConfig.from_preset("dpo", beta=0.3).beta == 0.3
    cfg = load_config(overrides=["loss.preset=ddpo", "loss.beta=0.2", "loss.kl_chunk_rows=64"]).loss
    assert (cfg.beta, cfg.omega_e, cfg.z, cfg.kl_chunk_rows) == (0.2, 5.0, "mean", 64)


@pytest.mark.parametrize("override, key", [
    ("loss.lam=1.5", "loss.lam"), ("loss.beta=0", "loss.beta"), ("loss.eps=0.5", "loss.eps"),
    ("loss.kl_scope=some", "loss.kl_scope"), ("loss.preset=ipo", "loss.preset"), ("loss.gama=1", "loss.gama"),
])
def test_out_of_range_or_unknown_knobs_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(overrides=[override])


def test_preset_cannot_be_reassigned_after_its_knobs_were_filled():
    cfg = LossConfig()
    with pytest.raises(ValueError, match="frozen"):
        cfg.preset = "dpo"
    cfg.beta = 0.2  # other knobs stay assignable, and validated
    with pytest.raises(ValueError, match="greater than 0"):
        cfg.beta = 0.0
