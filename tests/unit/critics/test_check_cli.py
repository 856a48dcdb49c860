"""`medpo-ray critic check` end to end on a small generated dataset: the table, then one JSON line."""
import json

import pytest

from driver.cli import main
from medpo_ray.data.lesions import LesionParams
from medpo_ray.data.synth import synthesize

pytestmark = pytest.mark.unit


def test_check_prints_table_then_one_json_line(tmp_path, capsys):
    synthesize(tmp_path / "data", studies=12, seed=3, size=112, params=LesionParams.from_difficulty(0.5, 112))
    assert main(["critic", "check", "--data", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].split()[:3] == ["row", "injected", "detected"]
    result = json.loads(out[-1])
    assert result["injected"] > 12 and result["bad_records"] == 0
    assert (result["detected_rate"], result["exact_fix_rate"], result["false_positive_rate"]) == (1.0, 1.0, 0.0)


def test_check_on_a_missing_path_is_a_clear_error(tmp_path, capsys):
    assert main(["critic", "check", "--data", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err
