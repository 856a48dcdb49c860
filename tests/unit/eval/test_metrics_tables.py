"""Aggregation over seeds, the markdown tables, the ablation recipe's validation and the RESULTS.md block."""
import pytest

from medpo_ray.config import ConfigError, load_config
from medpo_ray.eval.ablate import BEGIN, END, load_ablation, run_config, write_results_block
from medpo_ray.eval.tables import aggregate, markdown_mean_std, markdown_table

pytestmark = pytest.mark.unit


def test_aggregate_and_mean_std_table():
    agg = aggregate([{"presence": 0.5, "bleu": 10.0}, {"presence": 0.7, "bleu": None}])
    assert agg["presence"] == (pytest.approx(0.6), pytest.approx(0.1414213, abs=1e-6), 2)
    assert agg["bleu"] == (10.0, 0.0, 1)
    assert agg["laterality"] == (None, None, 0)
    table = markdown_mean_std({"dpo": agg})
    assert "| metric | dpo (n=2) |" in table
    assert "| presence ↑ | 0.600 ± 0.141 |" in table
    assert "| BLEU-4 ↑ | 10.0 |" in table  # one seed: no ± shown
    assert "| laterality ↑ | – |" in table


def test_single_value_table_marks_direction():
    table = markdown_table({"SFT": {"hallucinated": 0.25}, "aligned": {"hallucinated": 0.125}})
    assert "| hallucinated findings / report ↓ | 0.250 | 0.125 |" in table


def _recipe(tmp_path, text):
    p = tmp_path / "ablate.yaml"
    p.write_text(text)
    return p


GOOD = """
base: configs/demo.yaml
seeds: [0, 1, 2]
variants:
  dpo: {preset: dpo}
  no_kl: {preset: fire_mpo, alpha: 0.0}
quick:
  seeds: [5]
  variants: [no_kl]
  overrides: [train.steps=2]
"""


def test_quick_narrows_seeds_variants_and_adds_overrides(tmp_path):
    plan = load_ablation(_recipe(tmp_path, GOOD + "overrides: [train.steps=20]\n"), quick=True,
                         overrides=["train.lr=1e-4"])
    assert plan.seeds == [5] and list(plan.variants) == ["no_kl"]
    assert plan.overrides == ["train.steps=20", "train.steps=2", "train.lr=1e-4"]
    assert plan.eval.studies == 20
    full = load_ablation(_recipe(tmp_path, GOOD))
    assert full.seeds == [0, 1, 2] and len(full.variants) == 2


@pytest.mark.parametrize("bad, where", [
    ("base: x\nvariants: {a: {preset: nope}}\n", "variant 'a'"),
    ("base: x\nvariants: {a: {gamma: -1}}\n", "variant 'a'"),
    ("base: x\nvariants: {a: {}}\nquick: {variants: [b]}\n", "unknown variant"),
    ("base: x\nvariants: {a: {}}\nseeds: [1, 1]\n", "seeds repeat"),
    ("base: x\nvariants: {a: {}}\nsteps: 3\n", "steps"),
])
def test_bad_recipes_name_the_problem(tmp_path, bad, where):
    with pytest.raises(ConfigError, match=where):
        load_ablation(_recipe(tmp_path, bad))


def test_run_config_swaps_the_loss_section_and_keeps_the_rest(tmp_path):
    base = load_config(None, ["train.steps=7", "loss.kl_chunk_rows=64"])
    cfg = run_config(base, {"preset": "fire_mpo", "gamma": 0.0}, 3, tmp_path / "no_visual" / "seed3")
    assert cfg.loss.gamma == 0.0 and cfg.loss.alpha == 0.01 and cfg.loss.kl_chunk_rows == 64
    assert cfg.run.seed == 3 and cfg.run.out_dir.endswith("no_visual/seed3") and cfg.train.steps == 7
    dpo = run_config(base, {"preset": "dpo"}, 0, tmp_path / "dpo" / "seed0").loss
    assert (dpo.omega_u, dpo.gamma, dpo.alpha) == (1.0, 0.0, 0.0)


def test_results_block_is_replaced_and_hand_text_kept(tmp_path):
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\nintro by hand\n")
    write_results_block(md, "table v1")
    write_results_block(md, "table v2")
    text = md.read_text()
    assert text.count(BEGIN) == 1 and "table v2" in text and "table v1" not in text
    md.write_text(text.replace(END, END + "\n\nafter by hand"))
    write_results_block(md, "table v3")
    assert "intro by hand" in md.read_text() and "after by hand" in md.read_text()


def test_a_finished_run_is_kept_only_while_it_matches_its_recipe_and_warm_start(tmp_path):
    import json

    from medpo_ray.eval.ablate import RUN_FILE, _identity, _kept

    cfg = run_config(load_config(None), {"preset": "dpo"}, 0, tmp_path / "dpo" / "seed0")
    run = tmp_path / "dpo" / "seed0"
    run.mkdir(parents=True)
    (run / "summary.json").write_text("{}")
    assert not _kept(run, _identity(cfg, tmp_path / "sft-a"))  # no record of what it came from
    (run / RUN_FILE).write_text(json.dumps(_identity(cfg, tmp_path / "sft-a")))
    assert _kept(run, _identity(cfg, tmp_path / "sft-a"))
    assert not _kept(run, _identity(cfg, tmp_path / "sft-b"))
    other = run_config(load_config(None, ["train.steps=3"]), {"preset": "dpo"}, 0, run)
    assert not _kept(run, _identity(other, tmp_path / "sft-a"))
