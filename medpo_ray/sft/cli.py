"""`medpo-ray sft`: build data and base model if missing, SFT warm start (cached), then structured accuracy
on the validation split beside the majority and blank-image baselines; the last line is one JSON object."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time


def register(add) -> None:
    """Add the `sft` command."""
    p = add("sft", help="Supervised warm start of the policy (with the auxiliary lesion-cell loss), cached by "
                        "data, base model and settings; then validation accuracy against the baselines.")
    p.add_argument("--config", metavar="YAML", help="recipe (default: built-in defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    p.add_argument("--force", action="store_true", help="train again even when a cached checkpoint matches")
    p.add_argument("--no-eval", action="store_true", help="skip the validation table")
    p.add_argument("--eval-studies", type=int, default=0, metavar="N",
                   help="evaluate on the first N validation studies (default: all)")
    p.set_defaults(func=_sft)


def _eval_records(records, studies: int):
    if studies <= 0:
        return records
    keep = set(sorted({r.study_id for r in records})[:studies])
    return [r for r in records if r.study_id in keep]


def _evaluate(cfg, ckpt, data_dir, studies: int) -> dict:
    """Validation results, cached beside the checkpoint under a key of the evaluation settings."""
    from medpo_ray.data.splits import load_split
    from medpo_ray.eval.structured import evaluate

    settings = {"studies": studies, "tol": cfg.critic.measurement_tolerance_mm, "max_tokens": cfg.rollout.max_tokens,
                "dtype": cfg.model.dtype, "task": cfg.data.task}
    file = ckpt.path / f"eval-{hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]}.json"
    if file.is_file():
        return json.loads(file.read_text())
    val, bad = load_split(cfg, data_dir, "val")
    train, _ = load_split(cfg, data_dir, "train")
    if bad:
        print(f"eval: {len(bad)} validation records quarantined, first: {bad[0]}", file=sys.stderr)
    results = evaluate(ckpt.path, _eval_records(val, studies), train, tol=settings["tol"],
                       max_tokens=settings["max_tokens"], dtype=cfg.model.dtype,
                       max_model_len=cfg.model.max_model_len, kv_cache_gib=cfg.rollout.kv_cache_gib)
    file.write_text(json.dumps(results, indent=1) + "\n")  # key order = column order of the table
    return results


def _sft(args: argparse.Namespace) -> int:
    # Threads that spin while waiting make a shared or oversubscribed CPU many times slower (measured:
    # 0.5 s -> 2-14 s per step with two busy neighbours); passive waiting costs almost nothing alone.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from medpo_ray.config import load_config
    from medpo_ray.data.splits import ensure_data
    from medpo_ray.eval.structured import format_table
    from medpo_ray.sft.run import ensure_sft

    cfg = load_config(args.config, args.set)
    t0 = time.perf_counter()
    ckpt = ensure_sft(cfg, force=args.force)
    s = ckpt.stats
    how = "cached" if ckpt.cached else f"trained {s['steps']} steps in {s['seconds']:.0f} s ({s['stopped_by']})"
    print(f"sft checkpoint: {ckpt.path} ({how}; loss {s['loss']:.3f}"
          + (f", aux {s['aux_loss']:.3f}" if s.get("aux_loss") is not None else "") + ")")
    if cfg.sft.aux_lesion_loss and not s.get("aux_lesion_loss"):
        print("sft: the auxiliary lesion-cell loss was off: no training record has a lesion mask")
    line = {"checkpoint": str(ckpt.path), "cached": ckpt.cached, "steps": s["steps"], "train_seconds": s["seconds"],
            "loss": s["loss"], "aux_loss": s.get("aux_loss")}
    if not args.no_eval:
        results = _evaluate(cfg, ckpt, ensure_data(cfg), args.eval_studies)
        print(format_table(results))
        line["val"] = {name: {k: v for k, v in r.items() if k not in ("n", "tol_mm")} for name, r in results.items()}
    line["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(line))
    return 0
