"""`medpo-ray sft` end to end from nothing: data and base model built, a one-minute SFT, the checkpoint
served by vLLM for the validation table; the warm start writes parseable reports where the random init
does not, and a repeat is served from the cache."""
import json
import os
from pathlib import Path

import pytest

from driver.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
EVAL_STUDIES = 20


def test_short_sft_beats_the_random_init_and_is_cached(tmp_path, capsys):
    from medpo_ray.config import load_config
    from medpo_ray.data.splits import load_split
    from medpo_ray.eval.structured import evaluate

    sets = [f"data.path={tmp_path / 'data'}", "data.studies=400", f"sft.out_dir={tmp_path / 'sft'}",
            "sft.steps=100000", "sft.max_seconds=60"]
    argv = ["sft", "--config", str(DEMO), *[a for s in sets for a in ("--set", s)],
            "--eval-studies", str(EVAL_STUDIES)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    line = json.loads(out.strip().splitlines()[-1])
    assert not line["cached"] and line["steps"] > 0
    assert "parse rate" in out and "blank image" in out and "majority" in out
    ckpt = Path(line["checkpoint"])
    stats = json.loads((ckpt / "sft_stats.json").read_text())
    assert stats["stopped_by"] == "time" and stats["aux_lesion_loss"]

    # The random-init base model through the same evaluation (greedy vLLM) on the same records.
    cfg = load_config(DEMO, sets)
    val, bad = load_split(cfg, Path(stats["data"]), "val")
    assert not bad
    keep = set(sorted({r.study_id for r in val})[:EVAL_STUDIES])
    base = evaluate(stats["base_model"], [r for r in val if r.study_id in keep], blank=False)["model"]
    trained = line["val"]["model"]
    assert trained["parse"] > base["parse"] and trained["parse"] >= 0.5
    assert trained["vqa_closed"] > base["vqa_closed"]

    assert main([*argv, "--no-eval"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["cached"] and again["checkpoint"] == str(ckpt)
    assert os.path.isdir(stats["base_model"])
