"""`medpo-ray train`: the on-policy FiRe-MPO run (the driver lives in driver/loop.py, its start in driver/launch.py)."""
from __future__ import annotations

import argparse
import json


def add_config_args(p: argparse.ArgumentParser, default: str | None = "configs/demo.yaml") -> None:
    """--config YAML and repeated --set a.b=c overrides."""
    p.add_argument("--config", default=default, metavar="YAML", help=f"recipe (default: {default})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.steps=50 (repeatable)")


def register(add) -> None:
    """Register `train`."""
    p = add("train", help="run on-policy FiRe-MPO: vLLM rollouts, span-edit pairs, corruption, DeepSpeed")
    add_config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    p.set_defaults(func=_train)


def policy_dir(cfg) -> str:
    """The policy to align: `model.path` if given, else the embedded preset's cached SFT warm start."""
    if cfg.model.path:
        from medpo_ray.models.loading import check_model_dir

        return str(check_model_dir(cfg.model.path))
    from medpo_ray.sft.run import ensure_sft

    return str(ensure_sft(cfg).path)


def _train(args) -> int:
    from driver.launch import train
    from medpo_ray.config import load_config
    from medpo_ray.data.splits import ensure_data

    cfg = load_config(args.config, args.overrides)
    # A given model is checked first: a wrong directory is named before any data is generated or read.
    model_dir = policy_dir(cfg) if cfg.model.path else None
    data_dir = ensure_data(cfg)
    summary = train(cfg, model_dir or policy_dir(cfg), data_dir, resume=args.resume)
    print(json.dumps(summary))
    return 0
