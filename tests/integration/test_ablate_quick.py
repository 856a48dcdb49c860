"""`medpo-ray ablate --quick` from nothing: data, a short SFT, two variants trained through the real
pipeline (Ray, vLLM, DeepSpeed), every model evaluated, the table, plots and RESULTS block written; a
second call keeps the finished runs and evaluations."""
import json
from pathlib import Path

import pytest

from driver.cli import main
from tests.integration.promstack import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RECIPE = Path(__file__).resolve().parents[2] / "configs" / "ablate.yaml"


@pytest.fixture
def ray_down():
    """The ablation starts a local Ray in this process; leave none behind for other test modules."""
    yield
    import ray

    ray.shutdown()


def test_quick_ablation_end_to_end_and_resumed(tmp_path, capsys, ray_down):
    # Small data and a short SFT: the test keeps the command working, the numbers do not matter. Bounded by
    # steps, not seconds: on a loaded machine a 10 s SFT wrote answers the critic could not read (abstain).
    sets = [f"data.path={tmp_path / 'data'}", "data.studies=200", "sft.steps=80", "sft.max_seconds=600",
            f"sft.out_dir={tmp_path / 'sft'}",
            f"metrics.export_port={free_port()}"]
    argv = ["ablate", "--quick", "--config", str(RECIPE), "--out", str(tmp_path / "out"),
            "--results", str(tmp_path / "RESULTS.md"), *[a for s in sets for a in ("--set", s)]]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (first["runs"], first["variants"], first["seeds"]) == (2, 2, 1)

    record = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert list(record["columns"]) == ["majority", "SFT", "dpo", "fire_mpo"]
    for variant in ("dpo", "fire_mpo"):
        run = tmp_path / "out" / "runs" / variant / "seed0"
        steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert steps == [1, 2]
        mean, std, n = record["columns"][variant]["presence"]
        assert 0.0 <= mean <= 1.0 and std == 0.0 and n == 1
    md = (tmp_path / "RESULTS.md").read_text()
    assert "| metric | majority (n=1) | SFT (n=1) | dpo (n=1) | fire_mpo (n=1) |" in md
    assert "logical CPUs" in md and "docs/results/ablation_bars.png" in md
    for png in ("ablation_bars.png", "ablation_curves.png", "ablation_per_finding_f1.png"):
        assert (tmp_path / "docs" / "results" / png).stat().st_size > 1000

    assert main(argv) == 0  # everything finished is kept: no training, no evaluation
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["train_s"] < 5 and again["eval_s"] < 5
    assert json.loads((tmp_path / "out" / "ablation.json").read_text())["columns"] == record["columns"]
