"""scripts/gpu_check.sh is meant to be run once, on a GPU machine, without a chance to fix it there: every
`--set` it gives `medpo-ray train` must be a valid key and value of the recipe (both device settings)."""
import re
from pathlib import Path

import pytest

from medpo_ray.config import load_config

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"


@pytest.mark.parametrize("device", [{"dtype": "bfloat16", "bf16": "true", "gpu": "0.5", "work": "/tmp/w"},
                                    {"dtype": "float32", "bf16": "false", "gpu": "0", "work": "/tmp/w"}])
def test_every_override_of_the_check_is_a_valid_setting(device):
    text = SCRIPT.read_text()
    overrides = [re.sub(r'"?\$(\w+)"?', lambda m: device[m.group(1)], o) for o in re.findall(r"--set (\S+)", text)]
    assert len(overrides) >= 20
    cfg = load_config("configs/demo.yaml", overrides)
    assert cfg.train.steps == 5 and cfg.rollout.gpus_per_engine == float(device["gpu"])
