"""Every supported model family through the whole product: a tiny member built offline as a real HF directory
(`model.family`), the SFT warm start, 3 on-policy steps (vLLM rollouts, reference critic, corruption, two
DeepSpeed learners, weight sync with the live vLLM-vs-learner log-prob check on every step), full fine-tune
and LoRA, then `medpo-ray eval` of the trained policy. fp32 on both sides, so the engines must serve the
learner's weights to within 1e-4 nats."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from driver.cli import main
from medpo_ray.models.families import FAMILIES

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = 3


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def warm_start(request, pipeline_setup):
    """The family's tiny model after the SFT warm start (the lesion-cell head where the family has one)."""
    from medpo_ray.config import Config
    from medpo_ray.sft.run import ensure_sft

    family = request.param
    cfg = Config.model_validate(pipeline_setup.recipe(
        f"sft-{family}", model={"preset": "tiny", "family": family},
        sft={"aux_lesion_loss": FAMILIES[family].aux_path is not None}))
    return family, str(ensure_sft(cfg, progress=False).path)


def _train(setup, name: str, model_dir: str, **train) -> tuple[dict, list[dict]]:
    config = setup.write(name, model={"path": model_dir},
                         train={"steps": STEPS, "checkpoint_every": STEPS, "logprob_check_every": 1, **train},
                         guard={"every": 0})
    assert main(["train", "--config", str(config)]) == 0
    out = Path(setup.recipe(name)["run"]["out_dir"])
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return json.loads((out / "summary.json").read_text()), steps


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_a_family_aligns_on_policy_with_the_engines_serving_the_learners_weights(
        warm_start, pipeline_setup, pipeline_ray, finetune, tmp_path, capsys):
    family, model_dir = warm_start
    summary, steps = _train(pipeline_setup, f"{family}-{finetune}", model_dir, finetune=finetune)
    assert summary["steps"] == STEPS and summary["lost"] == 0
    assert [s["pairs"] for s in steps] == [4] * STEPS
    gaps = [s["logprob_mismatch"] for s in steps]
    assert len(gaps) == STEPS and max(gaps) < 1e-4, gaps
    # Step 2 starts from the first push (every tensor), step 3 from a partial one (what training changes;
    # the check above read the engines' log-probs after it).
    assert "sync_bytes" not in steps[0] and steps[1]["sync_omitted"] == 0 and steps[2]["sync_omitted"] > 0
    assert steps[2]["sync_bytes"] < steps[1]["sync_bytes"]
    ckpt = Path(summary["checkpoint"])
    if finetune == "lora":
        assert (ckpt / "adapter").is_dir()
        return
    capsys.readouterr()
    out = tmp_path / "eval"
    assert main(["eval", "--config", str(pipeline_setup.write(f"{family}-eval")), "--model", str(ckpt / "model"),
                 "--studies", "8", "--grounding-studies", "2", "--out", str(out)]) == 0
    [result] = json.loads((out / "eval.json").read_text()).values()
    closed = result["structured"]["vqa_closed"]  # the VQA split: closed questions answered and scored
    assert result["split"] == "test" and closed is not None and 0 <= closed <= 1
