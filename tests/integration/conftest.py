"""Fixtures of the pipeline tests: one tiny VQA policy warm-started once per session, one local Ray per
module.

The warm start is step-bounded (not time-bounded), so its weights, and with greedy rollouts every answer,
are the same on every machine: a run's records and pairs are reproducible. VQA answers are short and
always readable by the reference critic, so no step needs so many top-ups that the run stops.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.integration.promstack import free_port

SFT_STEPS = 150  # ~25 s on 2 cores; enough for answers of the right kind to every question


@dataclass
class PipelineSetup:
    """Data, warm-started policy and recipe shared by every pipeline test of the session."""

    root: Path
    base: dict
    model_dir: str

    @property
    def data_dir(self) -> Path:
        """The embedded dataset the base recipe generated."""
        return Path(self.base["data"]["path"])

    def recipe(self, name: str, **sections: dict) -> dict:
        """The base recipe with its own run directory and `sections` merged in (per key)."""
        data = copy.deepcopy(self.base)
        data["run"]["out_dir"] = str(self.root / "runs" / name)
        for section, values in sections.items():
            data.setdefault(section, {}).update(values)
        return data

    def write(self, name: str, **sections: dict) -> Path:
        """`recipe` as a YAML file for the command line."""
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(self.recipe(name, **sections)))
        return path

    def config(self, name: str, **sections: dict):
        """`recipe` as a validated Config."""
        from medpo_ray.config import Config

        return Config.model_validate(self.recipe(name, **sections))


@pytest.fixture(scope="session")
def pipeline_setup(tmp_path_factory) -> PipelineSetup:
    """Embedded data (200 studies, VQA) and the SFT warm start of the tiny preset, built once."""
    from medpo_ray.config import Config
    from medpo_ray.sft.run import ensure_sft

    root = tmp_path_factory.mktemp("pipeline")
    base = {
        "run": {"name": "pipeline-test", "seed": 0},
        "data": {"path": str(root / "data"), "studies": 200, "task": "vqa"},
        "model": {"preset": "tiny"},
        "sft": {"steps": SFT_STEPS, "max_seconds": 600, "out_dir": str(root / "sft")},
        # 2 learners x micro-batch 2 = 4 pairs a step; a small lr keeps the policy's answers readable.
        "train": {"steps": 4, "batch_size": 4, "micro_batch": 2, "num_learners": 2, "zero_stage": 1,
                  "checkpoint_every": 2, "lr": 1e-5},
    }
    sft = ensure_sft(Config.model_validate(base), progress=False)
    return PipelineSetup(root, base, str(sft.path))


@pytest.fixture(scope="module")
def pipeline_ray():
    """A local Ray for one test module: loopback, logical CPUs for 2 learners + 1 engine + light actors."""
    import ray

    from actors.loopback import loopback_only

    loopback_only()
    # The payloads are small; a 1 GiB object store leaves the machine's shared memory to the actors.
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             _metrics_export_port=free_port(), object_store_memory=1 << 30)
    yield
    ray.shutdown()
