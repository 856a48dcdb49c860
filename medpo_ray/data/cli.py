"""`medpo-ray data synth`: generate the embedded dataset (and optionally a contact sheet of it)."""
from __future__ import annotations

import argparse
import sys
import time

from medpo_ray.config import ConfigError, DataConfig

_DEFAULTS = DataConfig()


def register(add) -> None:
    """Add the `data synth` command."""
    p = add("data synth", help="Generate the embedded dataset: synthetic lesions on real DICOM slices, "
                               "reports and VQA, written as parquet (byte-identical for the same arguments).")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--studies", type=int, default=_DEFAULTS.studies, help="number of studies (default %(default)s)")
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="generator seed (default %(default)s)")
    p.add_argument("--size", type=int, default=_DEFAULTS.size, metavar="PX",
                   help="image width and height in pixels (default %(default)s)")
    p.add_argument("--difficulty", type=float, default=_DEFAULTS.difficulty, metavar="D",
                   help="0 (high contrast, big lesions) .. 1 (faint, small); maps to amplitude 0.75-0.6*D and "
                        "radius (6-4D)..(16-4D) px at 112 px (default %(default)s)")
    p.add_argument("--amplitude", type=float, help="lesion contrast in (0, 1]; overrides --difficulty")
    p.add_argument("--radius-min", type=float, metavar="PX", help="smallest lesion radius in output pixels")
    p.add_argument("--radius-max", type=float, metavar="PX", help="largest lesion radius in output pixels")
    p.add_argument("--radius-levels", type=int, default=_DEFAULTS.radius_levels, metavar="K",
                   help="0: continuous radii; K >= 2: K evenly spaced radii from --radius-min to --radius-max "
                        "(default %(default)s)")
    p.add_argument("--preview", metavar="PNG", help="also write a contact sheet (image | mask | corrupted | report)")
    p.add_argument("--preview-rows", type=int, default=8, metavar="N", help="studies on the contact sheet")
    p.set_defaults(func=_synth)


def _config(args: argparse.Namespace) -> DataConfig:
    from pydantic import ValidationError

    try:
        return DataConfig(studies=args.studies, seed=args.seed, size=args.size, difficulty=args.difficulty,
                          amplitude=args.amplitude, radius_min=args.radius_min, radius_max=args.radius_max,
                          radius_levels=args.radius_levels)
    except ValidationError as e:
        problems = "; ".join(
            ("--" + "-".join(str(p) for p in err["loc"]).replace("_", "-") if err["loc"] else "arguments")
            + ": " + err["msg"].removeprefix("Value error, ") for err in e.errors())
        raise ConfigError(problems) from None


class _Progress:
    """Prints `done/total, rate, ETA` to stderr about every 2 seconds and at the end."""

    def __init__(self):
        self.start = self.last = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - self.last < 2.0 and done < total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        print(f"data synth: {done}/{total} studies, {rate:.0f} studies/s, ETA {(total - done) / rate:.1f} s",
              file=sys.stderr, flush=True)


def _synth(args: argparse.Namespace) -> int:
    from medpo_ray.data.lesions import LesionParams
    from medpo_ray.data.synth import synthesize

    cfg = _config(args)
    params = LesionParams.from_difficulty(cfg.difficulty, cfg.size, cfg.amplitude, cfg.radius_min, cfg.radius_max,
                                          cfg.radius_levels)
    start = time.perf_counter()
    given = {"difficulty": cfg.difficulty, "amplitude": cfg.amplitude, "radius_min": cfg.radius_min,
             "radius_max": cfg.radius_max}
    if cfg.radius_levels:  # recorded only when set, so a continuous dataset's manifest is as before
        given["radius_levels"] = cfg.radius_levels
    manifest = synthesize(args.out, cfg.studies, cfg.seed, cfg.size, params, args=given, progress=_Progress())
    seconds = time.perf_counter() - start
    c = manifest["counts"]
    print(f"wrote {c['studies']} studies and {c['questions']} questions to {args.out} in {seconds:.1f} s "
          f"({c['studies'] / seconds:.0f} studies/s)")
    print(f"lesions: amplitude {params.amplitude:.3g}, radius {params.radius_min:.3g}-{params.radius_max:.3g} px"
          + (f", levels {', '.join(f'{r:g}' for r in params.radii())} px" if params.radius_levels else ""))
    for key in ("split", "modality", "lesions_per_study", "size", "question_type", "answer_type"):
        print(f"  {key}: " + ", ".join(f"{k} {v}" for k, v in c[key].items()))
    if args.preview:
        from medpo_ray.data.preview import write_preview

        print(f"preview: {write_preview(args.out, args.preview, args.preview_rows)}")
    return 0
