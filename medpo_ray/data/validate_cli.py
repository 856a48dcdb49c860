"""`medpo-ray data validate PATH`: counts per split and task, and every bad record with its reason."""
from __future__ import annotations

import argparse
import json
import sys

_KINDS = ("auto", "embedded", "hf_vqa", "slake", "iu_xray", "mimic_cxr", "box_csv")


def register(add) -> None:
    """Add `data validate` to the command line."""
    p = add("data validate", help="check a dataset: counts per split/task and every bad record with its reason "
                                  "(exit 0 even when some records are bad)")
    p.add_argument("path", help="dataset file or folder")
    p.add_argument("--kind", choices=_KINDS, default="auto", help="dataset layout (default: detect from the path)")
    p.add_argument("--split", default=None, help="only this split (train, val, test, ...)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--max-prompt-chars", type=int, default=None, help="override data.max_prompt_chars")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate `args.path` and print the report."""
    from medpo_ray.config import load_config
    from medpo_ray.data.validate import Limits, validate_path

    overrides = [] if args.max_prompt_chars is None else [f"data.max_prompt_chars={args.max_prompt_chars}"]
    data = load_config(None, overrides).data  # validated: a bad value is a ConfigError naming the key
    report = validate_path(args.path, kind=None if args.kind == "auto" else args.kind, split=args.split,
                           limits=Limits.from_config(data), progress=not (args.no_progress or args.json))
    empty = report.good == 0  # a dataset with nothing to train on is an error, not "0 good, 0 bad"
    if args.json:
        print(json.dumps(report.to_json()))
        return 1 if empty else 0
    print(f"dataset {report.path} (kind {report.kind})")
    print(f"  {'split':<10} {'task':<8} {'records':>8}")
    for (split, task), n in sorted(report.counts.items()):
        print(f"  {split:<10} {task:<8} {n:>8}")
    if report.bad:
        print(f"bad records ({len(report.bad)}):")
        for bad in report.bad:
            print(f"  {bad}")
    print(f"summary: {report.summary()}")
    if empty:
        print(f"error: {report.path} holds no usable record", file=sys.stderr)
        return 1
    return 0
