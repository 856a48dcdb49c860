"""A short `medpo-ray train` and a `medpo-ray eval` on each real dataset layout (HF VQA parquet, SLAKE,
IU-Xray, MIMIC-CXR-JPG) with the embedded critics, by configuration only (real_layouts.py builds the data:
real IU-Xray report text, images made here).

One policy serves all four: the tiny preset with its tokenizer trained on the four datasets' texts, warm
started for a few hundred steps on their training splits, so that its reports and answers are ones the
reference critic can read. Rollouts sample (temperature 1): a greedy policy that has memorised its data
repeats one normal report, which agrees with most references and so offers few counterfactuals.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import yaml

from tests.integration.real_layouts import LAYOUTS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VQA = ("hf_vqa", "slake")


@pytest.fixture(scope="module")
def real_data(tmp_path_factory):
    """(root, warm-started policy dir) over the four layouts."""
    from medpo_ray.config import SFTConfig
    from medpo_ray.data.sources import open_source
    from medpo_ray.models.corpus import dataset_texts
    from medpo_ray.models.factory import build_model
    from medpo_ray.models.presets import get_preset
    from medpo_ray.sft.train import train_sft

    root = tmp_path_factory.mktemp("real_layouts")
    for kind, write in LAYOUTS.items():
        write(root / kind)
    texts = [t for kind in LAYOUTS for t in dataset_texts(root / kind, kind)]
    build_model(root / "base", get_preset("tiny"), texts, seed=0)
    records = [r for kind in LAYOUTS for r in open_source(kind, root / kind, split="train").load().records]
    train_sft(root / "base", records, SFTConfig(steps=300, batch_size=16, aux_lesion_loss=False, max_seconds=600),
              root / "policy", seed=0, max_length=512, progress=False)
    return root


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "driver.cli", *argv], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("kind", list(LAYOUTS))
def test_train_then_eval_on_a_real_layout(real_data, kind):
    root = real_data
    run = root / "runs" / kind
    recipe = {"run": {"name": kind, "out_dir": str(run), "seed": 0},
              "data": {"source": kind, "path": str(root / kind)}, "model": {"path": str(root / "policy")},
              "rollout": {"max_tokens": 128, "temperature": 1.0},
              "train": {"steps": 2, "batch_size": 4, "micro_batch": 2, "num_learners": 1, "checkpoint_every": 2,
                        "lr": 1e-5, "max_prompts_per_pair": 64},
              "guard": {"every": 0}}
    config = root / f"{kind}.yaml"
    config.write_text(yaml.safe_dump(recipe))
    done = _cli("train", "--config", str(config))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["trained"] == 8 and summary["quarantined"] == 0
    rows = [r for f in sorted((run / "audit").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    trained = [r for r in rows if r["trained"]]
    assert len(trained) == 8 and all(r["critic"] == "reference" for r in trained)
    assert all(r["y_plus"] != r["y_minus"] for r in trained)
    if kind == "slake":  # SLAKE ships masks: the corruption used them
        assert {r["corruption_region"] for r in trained} == {"mask"}
    elif kind in ("iu_xray", "mimic_cxr"):  # no masks or boxes: whole-image noise, said in the audit
        assert {r["corruption_region"] for r in trained} == {"whole"}

    out = root / "eval" / kind
    model = run / "checkpoints" / "step-000002" / "model"
    done = _cli("eval", "--config", str(config), "--model", str(model), "--split", "test", "--studies", "100",
                "--grounding-studies", "0", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    result = next(iter(json.loads((out / "eval.json").read_text()).values()))
    from medpo_ray.data.sources import open_source

    test = open_source(kind, root / kind, split="test").load().records
    if kind in VQA:
        s = result["structured"]
        closed = sum(r.answer_type == "closed" for r in test)
        assert (s["n"]["vqa_closed"], s["n"]["vqa_open"]) == (closed, len(test) - closed) and closed > 0
        items = result["items"].values()
        for split in ("vqa_closed", "vqa_open"):  # the accuracy is the share of items scored right
            scored = [i[split] for i in items if split in i]
            assert s[split] == pytest.approx(sum(scored) / len(scored))
    else:
        assert result["clinical"]["micro"]["f1"] is not None or result["clinical"]["micro"]["tp"] == 0
        assert result["hallucination"]["n"] == len(test) and result["text"]["n"] == len(test)
        assert 0 <= result["text"]["bleu"] <= 100 and 0 <= result["text"]["rouge_l"] <= 1
        assert result["critic"]["n"] == len(test)
