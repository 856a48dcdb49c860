"""`medpo-ray demo`: the whole embedded default from nothing, end to end.

dataset -> tiny Qwen2-VL -> SFT warm start (cached) -> on-policy FiRe-MPO (vLLM rollouts, reference
critic, lesion corruption, DeepSpeed learners) -> SFT vs aligned on the held-out split.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from driver.explore_cli import command as explore_command
from driver.train_cli import add_config_args


def register(add) -> None:
    """Register `demo`."""
    p = add("demo", help="run the embedded default end to end and compare SFT with the aligned policy")
    add_config_args(p)
    p.add_argument("--split", default="test", choices=("val", "test"), help="held-out split to compare on")
    p.add_argument("--eval-studies", type=int, default=1000, metavar="N",
                   help="studies of the held-out split to evaluate (their report and VQA records)")
    p.set_defaults(func=_demo)


def _held_out(cfg, data_dir: Path, split: str, studies: int) -> list:
    from medpo_ray.data.splits import load_split

    records, _ = load_split(cfg, data_dir, split)
    keep = sorted({r.study_id for r in records})[:studies]
    return [r for r in records if r.study_id in set(keep)]


def _demo(args) -> int:
    from driver.launch import train
    from medpo_ray.config import load_config
    from medpo_ray.data.splits import ensure_data, load_split
    from medpo_ray.eval.structured import score_majority
    from medpo_ray.eval.study_tables import paired_tables
    from medpo_ray.eval.suite import Evaluator, headline
    from medpo_ray.eval.tables import markdown_table
    from medpo_ray.sft.run import ensure_sft

    t0 = time.monotonic()
    cfg = load_config(args.config, args.overrides)
    print(f"[demo] 1/4 dataset: {cfg.data.source} at {cfg.data.path}")
    data_dir = ensure_data(cfg)
    print("[demo] 2/4 SFT warm start (cached after the first run)")
    sft = ensure_sft(cfg)
    print(f"[demo]     {'cached' if sft.cached else 'trained'}: {sft.path}")
    out = Path(cfg.run.out_dir)
    shutil.rmtree(out, ignore_errors=True)  # a demo always starts its run from the warm start
    print(f"[demo] 3/4 on-policy FiRe-MPO: {cfg.train.steps} steps x {cfg.train.batch_size} pairs; metrics for "
          f"Prometheus at http://{cfg.metrics.host}:{cfg.metrics.export_port}/metrics while it runs")
    summary = train(cfg, str(sft.path), data_dir)
    aligned = Path(summary["checkpoint"]) / "model"
    print(f"[demo]     {json.dumps({k: v for k, v in summary.items() if k != 'probes'})}")
    held_out = _held_out(cfg, data_dir, args.split, args.eval_studies)
    print(f"[demo] 4/4 greedy evaluation on {len(held_out)} {args.split} records (vLLM): SFT vs the aligned "
          f"policy after {summary['steps']} steps, paired over the same records")
    train_records, _ = load_split(cfg, data_dir, "train")
    ev = Evaluator(held_out, tol=cfg.critic.measurement_tolerance_mm, max_tokens=cfg.rollout.max_tokens,
                   corruption_cfg=cfg.corruption, dtype=cfg.model.dtype, max_model_len=cfg.model.max_model_len)
    before, after = ev.evaluate(sft.path), ev.evaluate(aligned)
    majority = score_majority(held_out, train_records, cfg.critic.measurement_tolerance_mm)
    table = markdown_table({"majority": {k: majority.get(k) for k in majority if k != "n"},
                            "SFT": headline(before), "FiRe-MPO": headline(after)})
    paired = paired_tables({"SFT": [before["items"]], "FiRe-MPO": [after["items"]]}, ["SFT"])
    print(table + "\n\n" + paired["markdown"])
    results = {"SFT": headline(before), "FiRe-MPO": headline(after), "majority": majority,
               "paired": paired["tests"], "guard": {k: summary.get(k) for k in ("best_step", "best_model")}}
    (out / "demo_results.json").write_text(json.dumps(results, indent=1))
    print(f"[demo] done in {time.monotonic() - t0:.0f} s; results in {out / 'demo_results.json'}")
    print(f"[demo] see the pairs it learned from: {explore_command(out)}")
    return 0
