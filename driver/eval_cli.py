"""`medpo-ray eval` (every metric of one or more policies on a held-out split) and `medpo-ray ablate`
(the loss presets from one SFT checkpoint over seeds, written into RESULTS.md)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from driver.train_cli import add_config_args
from medpo_ray.errors import MedpoError


def register(add) -> None:
    """Register `eval` and `ablate`."""
    p = add("eval", help="greedy vLLM generation on a held-out split, then structured accuracy, clinical "
                         "efficacy, hallucinations, BLEU/ROUGE-L, critic edits and grounding sensitivity")
    add_config_args(p)
    p.add_argument("--model", action="append", required=True, metavar="DIR",
                   help="HF model directory (repeat to compare models; the same architecture shares one engine)")
    p.add_argument("--data", metavar="DIR", help="dataset directory (default: data.path of the recipe)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--studies", type=int, default=200, metavar="N", help="studies of the split to evaluate")
    p.add_argument("--grounding-studies", type=int, default=100, metavar="N",
                   help="studies with lesions scored for grounding sensitivity")
    p.add_argument("--run", action="append", default=[], metavar="DIR",
                   help="run directory whose metrics.jsonl gives training curves (default: inferred from "
                        "<run>/checkpoints/step-N/model)")
    p.add_argument("--out", default="artifacts/eval", metavar="DIR", help="where JSON, table and plots go")
    p.set_defaults(func=_eval)

    p = add("ablate", help="dpo / rrpo / mask_dpo / fire_mpo and fire_mpo without the visual term or the KL, "
                           "from one SFT checkpoint over seeds; mean ± std into RESULTS.md")
    p.add_argument("--config", default="configs/ablate.yaml", metavar="YAML", help="ablation recipe")
    p.add_argument("--quick", action="store_true",
                   help="one seed, few steps, two variants, small eval (the CI setting); writes under --out only")
    p.add_argument("--out", metavar="DIR", help="run and result directory (default: the recipe's out_dir)")
    p.add_argument("--results", metavar="MD", help="markdown file to write (default: RESULTS.md, or none with --quick)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the base training recipe, e.g. --set train.steps=10")
    p.set_defaults(func=_ablate)


def _run_dir(model: Path) -> Path | None:
    # An aligned model lives at <run>/checkpoints/step-N/model.
    run = model.resolve().parents[2] if len(model.resolve().parents) > 2 else None
    return run if run is not None and (run / "metrics.jsonl").is_file() else None


def _eval(args) -> int:
    from medpo_ray.config import load_config
    from medpo_ray.data.splits import load_split
    from medpo_ray.eval import plots
    from medpo_ray.eval.suite import Evaluator, headline, held_out
    from medpo_ray.eval.tables import markdown_table

    if args.studies < 1 or args.grounding_studies < 0:
        raise MedpoError("--studies must be >= 1 and --grounding-studies >= 0")
    cfg = load_config(args.config, args.overrides)
    data = Path(args.data or cfg.data.path)
    if not data.exists():
        raise MedpoError(f"--data {str(data)!r} does not exist")
    records, bad = load_split(cfg, data, args.split)
    for b in bad[:5]:
        print(f"eval: quarantined {b}", file=sys.stderr)
    records = held_out(records, args.studies)
    if not records:
        raise MedpoError(f"split {args.split!r} of {data} has no usable records")
    judge = None
    if cfg.eval.judge == "openai":
        from medpo_ray.eval.judge import Judge

        judge = Judge(cfg.eval)
        print(f"eval: LLM judge at {cfg.eval.base_url} (model {judge.client.preflight('eval')!r}), verdicts "
              f"cached in {cfg.eval.cache}", file=sys.stderr)
    evaluator = Evaluator(records, tol=cfg.critic.measurement_tolerance_mm, max_tokens=cfg.rollout.max_tokens,
                          grounding_studies=args.grounding_studies, corruption_cfg=cfg.corruption,
                          dtype=cfg.model.dtype, max_model_len=cfg.model.max_model_len, judge=judge)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, columns = {}, {}
    for i, model in enumerate(args.model):
        name = Path(model).name if Path(model).name != "model" else Path(model).parent.name
        name = name if name not in results else f"{name}#{i}"
        results[name] = {**evaluator.evaluate(model), "split": args.split, "quarantined": len(bad)}
        columns[name] = headline(results[name])
    (out / "eval.json").write_text(json.dumps(results, indent=1))
    table = markdown_table(columns)
    (out / "eval.md").write_text(table + "\n")
    plots.per_finding_bars(results, out / "per_finding_f1.png")
    runs = [Path(r) for r in args.run] or [r for r in (_run_dir(Path(m)) for m in args.model) if r is not None]
    if runs:
        plots.training_curves({r.name: plots.read_metrics_log(r / "metrics.jsonl") for r in runs},
                              out / "training_curves.png")
    print(table)
    print(f"eval: {len(records)} records of {args.split}; JSON, table and plots in {out}")
    print(json.dumps(columns))
    return 0


def _ablate(args) -> int:
    from driver.launch import train
    from medpo_ray.eval.ablate import load_ablation, run_ablation

    plan = load_ablation(args.config, quick=args.quick, overrides=args.overrides)
    out = Path(args.out or plan.out_dir)
    results = args.results or (None if args.quick else "RESULTS.md")
    summary = run_ablation(plan, out, train, results_md=Path(results) if results else None)
    print(json.dumps(summary))
    return 0
