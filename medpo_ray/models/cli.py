"""`medpo-ray model tiny`: build the embedded policy offline."""
from __future__ import annotations

import argparse


def register(add) -> None:
    """Add the `model` commands to the CLI."""
    from medpo_ray.models.families import FAMILIES
    from medpo_ray.models.presets import PRESETS

    p = add("model tiny", help="build a tiny random-init policy of a supported family (tokenizer trained on "
                               "the project's text) laid out as a hub directory of that family, which "
                               "transformers and vLLM load; same args -> same bytes")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                   help="size: tiny (tests), demo (learnable in minutes), small (~30M, benchmarks)")
    p.add_argument("--data", default=None,
                   help="dataset directory (parquet) whose texts train the tokenizer; default: text "
                        "rendered by the embedded report/VQA grammar")
    p.add_argument("--seed", type=int, default=0, help="weight-init seed")
    p.add_argument("--family", default="qwen2_vl", choices=sorted(FAMILIES),
                   help="model family (architecture, processor, chat template); default qwen2_vl")
    p.set_defaults(func=_tiny)


def _tiny(args: argparse.Namespace) -> int:
    import time

    from medpo_ray.models.corpus import dataset_texts, grammar_texts
    from medpo_ray.models.factory import build_model
    from medpo_ray.models.presets import get_preset

    t0 = time.perf_counter()
    preset = get_preset(args.preset)
    texts = dataset_texts(args.data) if args.data else grammar_texts()
    print(f"tokenizer corpus: {len(texts)} texts from {args.data or 'the embedded report/VQA grammar'}")
    info = build_model(args.out, preset, texts, seed=args.seed, family=args.family)
    print(f"model {preset.name} ({args.family}): {info['parameters'] / 1e6:.2f}M parameters, tokenizer {info['tokenizer_size']} "
          f"tokens (vocab_size {info['vocab_size']}), written to {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0
