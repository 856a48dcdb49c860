"""`medpo-ray eval` on real parts: embedded studies, tiny Qwen2-VL policies, greedy vLLM generation and
transformers forwards. A second model loaded into the running engine by weight push must decode exactly
as a fresh engine on that model; files, numbers and bad input are checked through the command line."""
import json
import math
from pathlib import Path

import pytest

from driver.cli import main

pytestmark = pytest.mark.integration
DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """30 embedded studies and two tiny policies that differ only in their initial weights."""
    from medpo_ray.data.lesions import LesionParams
    from medpo_ray.data.synth import synthesize
    from medpo_ray.models.corpus import dataset_texts
    from medpo_ray.models.factory import build_model
    from medpo_ray.models.presets import get_preset

    root = tmp_path_factory.mktemp("eval")
    synthesize(root / "data", 30, 0, 112, LesionParams.from_difficulty(0.35, 112))
    texts = dataset_texts(root / "data")
    models = []
    for seed in (0, 1):
        build_model(root / f"tiny{seed}", get_preset("tiny"), texts, seed=seed)
        models.append(root / f"tiny{seed}")
    return root, models


def _records(root):
    from medpo_ray.config import load_config
    from medpo_ray.data.splits import load_split
    from medpo_ray.eval.suite import held_out

    records, bad = load_split(load_config(DEMO), root / "data", "test")
    assert records and not bad
    return held_out(records, 3)


def test_weight_push_decodes_like_a_fresh_engine(setup):
    from medpo_ray.eval.suite import Evaluator

    root, (a, b) = setup
    records = _records(root)
    shared = Evaluator(records, max_tokens=24)
    texts_a, _ = shared.generate(a)
    engine = shared.engine
    pushed, _ = shared.generate(b)
    assert shared.engine is engine and engine.policy_version == 1  # reused, not restarted
    fresh, _ = Evaluator(records, max_tokens=24).generate(b)
    assert pushed == fresh
    assert pushed != texts_a  # the push really changed the weights


def test_eval_command_writes_json_table_and_plots(setup, capsys):
    from medpo_ray.eval.suite import HEADLINE

    root, (a, b) = setup
    out = root / "out"
    argv = ["eval", "--config", str(DEMO), "--model", str(a), "--model", str(b), "--data", str(root / "data"),
            "--studies", "4", "--grounding-studies", "3", "--out", str(out)]
    assert main(argv) == 0
    columns = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(columns) == ["tiny0", "tiny1"]
    for col in columns.values():
        assert set(col) == {k for k, _, _ in HEADLINE}
        assert 0.0 <= col["presence"] <= 1.0 and col["critic_edits"] >= 0.0
        assert math.isfinite(col["drop_lesion"]) and math.isfinite(col["grounding"])
    result = json.loads((out / "eval.json").read_text())["tiny0"]
    assert result["grounding"]["n"] + result["grounding"]["skipped"] >= 1
    assert result["structured"]["n"]["parse"] == result["text"]["n"] == result["critic"]["n"]
    assert (out / "eval.md").read_text().startswith("| metric | tiny0 | tiny1 |")
    assert (out / "per_finding_f1.png").stat().st_size > 1000


def test_missing_data_is_a_clear_error(setup, capsys):
    root, (a, _) = setup
    assert main(["eval", "--config", str(DEMO), "--model", str(a), "--data", str(root / "nowhere")]) == 2
    assert "--data" in capsys.readouterr().err
