"""`medpo-ray critic check`: run the perturbation suite on a dataset and print the table, then one
JSON line (injected, detected_rate, exact_fix_rate, false_positive_rate, ...)."""
from __future__ import annotations

import json
import sys
import time


def register(add) -> None:
    """Add the `critic check` command."""
    p = add("critic check", help="Inject laterality/size/count/measurement/presence errors into the ground-truth "
                                 "answers of a dataset and measure how the critic detects and fixes them.")
    p.add_argument("--data", required=True, metavar="PATH",
                   help="dataset directory (e.g. from `medpo-ray data synth`), or for --kind iu_xray also the "
                        "reports' .tgz archive, read in place without images")
    p.add_argument("--kind", default="auto", help="dataset kind (default: detected from the layout)")
    p.add_argument("--split", help="only records of this split")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N records")
    p.add_argument("--config", metavar="YAML", help="recipe whose `critic` section picks the backend "
                                                    "(default: the reference critic)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.set_defaults(func=_check)


def _progress(total: int):
    start = time.monotonic()

    def report(done: int) -> None:
        if done % 200 and done != total:
            return
        rate = done / max(time.monotonic() - start, 1e-9)
        eta = (total - done) / rate if rate else 0.0
        print(f"  {done}/{total} records, {rate:.0f}/s, ETA {eta:.0f} s", file=sys.stderr, flush=True)

    return report


def _check(args) -> int:
    from pathlib import Path

    from medpo_ray.config import load_config
    from medpo_ray.critics import make_critic
    from medpo_ray.critics.perturb import format_table, run_suite, summary
    from medpo_ray.critics.vqa_answers import AnswerVocabulary
    from medpo_ray.data.sources import open_source
    from medpo_ray.data.sources.iu_xray import IUXraySource

    cfg = load_config(args.config, args.set).critic
    if args.kind == "iu_xray" and Path(args.data).is_file() and Path(args.data).name.endswith((".tgz", ".tar.gz")):
        loaded = IUXraySource.text_records(args.data)
    else:
        loaded = open_source(args.kind, args.data, split=args.split).load()
    records = loaded.records[: args.limit] if args.limit else loaded.records
    for bad in loaded.bad[:10]:
        print(f"skipped: {bad}", file=sys.stderr)
    # Real VQA: wrong answers to inject, and the critic's counterfactuals, come from the data's own answers.
    vocab = AnswerVocabulary.from_records(records, cfg.vqa_answer_choices)
    critic = make_critic(cfg, vocab=vocab)
    print(f"critic {critic.name} on {len(records)} records of {args.data} ({len(loaded.bad)} bad records skipped)",
          file=sys.stderr)
    rows = run_suite(critic, records, _progress(len(records)), vocab)
    print(format_table(rows))
    print(json.dumps({**summary(rows), "bad_records": len(loaded.bad)}))
    return 0
