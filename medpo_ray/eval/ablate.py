"""The loss ablation: every variant from the same SFT checkpoint with the same on-policy budget, over
seeds, each aligned model evaluated on the same held-out records; mean ± std into a markdown file.

The on-policy run itself is passed in as `train_fn` (medpo_ray.pipeline.train from the CLI), which keeps
this module free of Ray. Finished runs and evaluations are kept on disk, so a stopped ablation
continues where it stopped.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medpo_ray.config import Config, ConfigError, LossConfig, apply_overrides, load_config, load_yaml

BEGIN, END = "<!-- ablate:begin (written by `medpo-ray ablate`) -->", "<!-- ablate:end -->"
PLOT_KEYS = (("laterality", "laterality"), ("count", "count"), ("exact", "exact findings"),
             ("ce_f1", "CE F1"), ("hallucinated", "hallucinated / report"), ("grounding", "grounding"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvalSettings(_Strict):
    split: str = Field("test", pattern="^(val|test)$")
    studies: int = Field(100, ge=1)
    grounding_studies: int = Field(100, ge=0)


class QuickSettings(_Strict):
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    variants: list[str] = Field(default_factory=list)  # empty: the first two variants
    overrides: list[str] = Field(default_factory=list)  # applied after the main overrides
    eval: EvalSettings = EvalSettings(studies=20, grounding_studies=10)


class Variant(_Strict):
    """One row of the study: a loss section, recipe overrides (offline runs, another critic), its seeds."""

    loss: dict = Field(default_factory=dict)
    overrides: list[str] = Field(default_factory=list)
    seeds: list[int] | None = None  # None: the study's seeds


_VARIANT_KEYS = set(Variant.model_fields)


def as_variant(spec: dict) -> Variant:
    """A variant from its YAML: {loss, overrides, seeds}, or a bare loss section (the older form)."""
    if spec and set(spec) <= _VARIANT_KEYS and ("loss" in spec or "overrides" in spec):
        return Variant.model_validate(spec)
    return Variant(loss=spec)


class Ablation(_Strict):
    """configs/ablate.yaml: the base recipe, its overrides, the variants and the seeds."""

    base: str = "configs/demo.yaml"
    overrides: list[str] = Field(default_factory=list)
    out_dir: str = "artifacts/ablate"
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    variants: dict[str, dict] = Field(min_length=1)
    # Further warm starts evaluated beside the base recipe's (name -> overrides of the base recipe).
    warm_starts: dict[str, list[str]] = Field(default_factory=dict)
    # The variant every other one is also tested against, paired (on-policy DPO in the study).
    baseline: str | None = None
    eval: EvalSettings = EvalSettings()
    quick: QuickSettings = QuickSettings()

    @model_validator(mode="after")
    def _check_variants(self) -> Ablation:
        for name, spec in self.variants.items():
            try:
                LossConfig.model_validate(as_variant(spec).loss)
            except ValidationError as e:
                raise ValueError(f"variant {name!r}: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None
        if self.baseline is not None and self.baseline not in self.variants:
            raise ValueError(f"baseline {self.baseline!r} is not a variant")
        unknown = set(self.quick.variants) - set(self.variants)
        if unknown:
            raise ValueError(f"quick.variants names unknown variant(s) {sorted(unknown)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat: {self.seeds}")
        return self


def load_ablation(path: str | Path, quick: bool = False, overrides: list[str] = ()) -> Ablation:
    """The ablation recipe (validated), narrowed to its quick setting when `quick`; extra base overrides."""
    try:
        data = load_yaml(Path(path).read_text()) or {}
        plan = Ablation.model_validate(data)
    except FileNotFoundError:
        raise ConfigError(f"ablation recipe not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"{path}: {'.'.join(map(str, err['loc'])) or '<root>'}: {err['msg']}") from None
    update: dict = {"overrides": [*plan.overrides, *overrides]}
    if quick:
        names = plan.quick.variants or list(plan.variants)[:2]
        update = {"overrides": [*plan.overrides, *plan.quick.overrides, *overrides], "seeds": plan.quick.seeds,
                  "variants": {k: as_variant(plan.variants[k]).model_dump() | {"seeds": None} for k in names},
                  "baseline": plan.baseline if plan.baseline in names else None,
                  "warm_starts": {}, "eval": plan.quick.eval}
    return plan.model_copy(update=update)


def run_config(base: Config, variant: Variant | dict, seed: int, out_dir: Path) -> Config:
    """The base recipe with this variant's overrides, loss section, seed and output directory."""
    variant = variant if isinstance(variant, Variant) else Variant(loss=variant)
    data = apply_overrides(base.model_dump(), variant.overrides)
    chunks = {k: data["loss"][k] for k in ("kl_chunk_rows", "logprob_chunk_rows")}
    data["loss"] = {**chunks, **variant.loss}
    data["run"].update(seed=seed, out_dir=str(out_dir), name=out_dir.parent.name)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"variant {out_dir.parent.name!r}: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None


def variant_seeds(plan: Ablation) -> dict[str, list[int]]:
    """The seeds each variant runs (its own, else the study's)."""
    return {v: as_variant(spec).seeds or plan.seeds for v, spec in plan.variants.items()}


def hardware() -> dict:
    """CPU model, logical CPUs and memory of this machine, for the record."""
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(int(x.split()[1]) for x in Path("/proc/meminfo").read_text().splitlines()
                   if x.startswith("MemTotal")) / 2**20
    except (OSError, StopIteration, ValueError):
        mem = None
    return {"cpu": cpu, "nproc": os.cpu_count(), "mem_gib": round(mem, 1) if mem else None,
            "python": platform.python_version()}


def _log(msg: str) -> None:
    print(f"[ablate] {msg}", file=sys.stderr, flush=True)


RUN_FILE = "ablate_run.json"  # what a finished run was trained from; a run is kept only if it still matches


def _identity(cfg: Config, sft: Path) -> dict:
    return {"sft": str(sft), "config": cfg.model_dump(mode="json")}


def _kept(run_dir: Path, identity: dict) -> bool:
    try:
        return (run_dir / "summary.json").is_file() and json.loads((run_dir / RUN_FILE).read_text()) == identity
    except (OSError, ValueError):
        return False


def _train_all(plan: Ablation, base: Config, sft: Path, data_dir: Path, out: Path, train_fn: Callable) -> dict:
    runs = {(v, s): run_config(base, as_variant(plan.variants[v]), s, out / "runs" / v / f"seed{s}")
            for v, seeds in variant_seeds(plan).items() for s in seeds}
    todo = [k for k, cfg in runs.items() if not _kept(Path(cfg.run.out_dir), _identity(cfg, sft))]
    done_s, models = 0.0, {}
    for i, ((variant, seed), cfg) in enumerate(runs.items()):
        run_dir = Path(cfg.run.out_dir)
        if (variant, seed) not in todo:
            _log(f"run {i + 1}/{len(runs)} {variant} seed {seed}: kept from {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)  # a stale or half-finished run starts over from the warm start
            t0 = time.monotonic()
            train_fn(cfg, str(sft), data_dir)
            (run_dir / RUN_FILE).write_text(json.dumps(_identity(cfg, sft), indent=1))
            done_s += time.monotonic() - t0
            n = todo.index((variant, seed)) + 1
            _log(f"run {i + 1}/{len(runs)} {variant} seed {seed}: trained in {time.monotonic() - t0:.0f} s; "
                 f"ETA training {(len(todo) - n) * done_s / n:.0f} s")
        summary = json.loads((run_dir / "summary.json").read_text())
        models[(variant, seed)] = (Path(summary["checkpoint"]) / "model", run_dir)
    return models


def _evaluate_cached(evaluator, model: Path, path: Path) -> dict:
    if path.is_file():
        kept = json.loads(path.read_text())
        if "items" in kept:  # evaluations from before per-record outcomes are done again
            return kept
    result = evaluator.evaluate(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return result


def run_ablation(plan: Ablation, out: Path, train_fn: Callable, results_md: Path | None = None) -> dict:
    """Train every (variant, seed), evaluate SFT and each aligned model, aggregate, write tables and plots."""
    from medpo_ray.data.splits import ensure_data, load_split
    from medpo_ray.eval import plots
    from medpo_ray.eval.structured import score_majority
    from medpo_ray.eval.study_tables import paired_tables
    from medpo_ray.eval.suite import Evaluator, headline, held_out
    from medpo_ray.eval.tables import aggregate, markdown_mean_std
    from medpo_ray.sft.run import ensure_sft

    t0 = time.monotonic()
    base = load_config(plan.base, plan.overrides)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = ensure_data(base)
    sft = ensure_sft(base)
    _log(f"SFT warm start ({'cached' if sft.cached else 'trained'}): {sft.path}")
    t_sft = time.monotonic() - t0
    models = _train_all(plan, base, sft.path, data_dir, out, train_fn)
    t_train = time.monotonic() - t0 - t_sft
    records, _ = load_split(base, data_dir, plan.eval.split)
    records = held_out(records, plan.eval.studies)
    ev = Evaluator(records, tol=base.critic.measurement_tolerance_mm, max_tokens=base.rollout.max_tokens,
                   grounding_studies=plan.eval.grounding_studies, corruption_cfg=base.corruption,
                   dtype=base.model.dtype, max_model_len=base.model.max_model_len)
    tag = f"{plan.eval.split}-{plan.eval.studies}-{plan.eval.grounding_studies}"
    sft_result = _evaluate_cached(ev, sft.path, out / "eval" / f"sft-{sft.path.name}-{tag}.json")
    others = {}
    for name, extra in plan.warm_starts.items():  # same data and model, other SFT settings (e.g. clean)
        ws = ensure_sft(load_config(plan.base, [*plan.overrides, *extra]))
        others[name] = _evaluate_cached(ev, ws.path, out / "eval" / f"sft-{ws.path.name}-{tag}.json")
    per_run = {key: _evaluate_cached(ev, model, run_dir / f"eval-{tag}.json")
               for key, (model, run_dir) in models.items()}
    t_eval = time.monotonic() - t0 - t_sft - t_train
    train_records, _ = load_split(base, data_dir, "train")
    majority = score_majority(records, train_records, base.critic.measurement_tolerance_mm)
    seeds = variant_seeds(plan)
    columns = {"majority": aggregate([{k: majority.get(k) for k in majority if k != "n"}]),
               "SFT": aggregate([headline(sft_result)]),
               **{name: aggregate([headline(r)]) for name, r in others.items()}}
    for variant in plan.variants:
        columns[variant] = aggregate([headline(per_run[(variant, s)]) for s in seeds[variant]])
    items = {"SFT": [sft_result["items"]], **{n: [r["items"]] for n, r in others.items()},
             **{v: [per_run[(v, s)]["items"] for s in seeds[v]] for v in plan.variants}}
    stats = paired_tables(items, ["SFT", *([plan.baseline] if plan.baseline else [])])
    table = markdown_mean_std(columns) + "\n\n" + stats["markdown"]
    print(table)
    plot_dir = (results_md.parent / "docs" / "results") if results_md else out
    plot_dir.mkdir(parents=True, exist_ok=True)
    plots.ablation_bars({k: v for k, v in columns.items() if k != "majority"}, PLOT_KEYS,
                        plot_dir / "ablation_bars.png")
    plots.training_curves({v: [row for s in seeds[v] for row in plots.read_metrics_log(
        models[(v, s)][1] / "metrics.jsonl")] for v in plan.variants}, plot_dir / "ablation_curves.png")
    plots.per_finding_bars({"SFT": sft_result, **{v: per_run[(v, seeds[v][0])] for v in plan.variants}},
                           plot_dir / "ablation_per_finding_f1.png")
    wall = {"total_s": round(time.monotonic() - t0, 1), "sft_s": round(t_sft, 1), "train_s": round(t_train, 1),
            "eval_s": round(t_eval, 1)}
    # What the work cost when it was done, also when this call found it on disk.
    measured = {"runs_s": round(sum(json.loads((d / "summary.json").read_text())["seconds"]
                                    for _, d in models.values()), 1),
                "evals_s": round(sum(r["seconds"]["total"] for r in (sft_result, *others.values(), *per_run.values())), 1)}
    record = {"hardware": hardware(), "wall": wall, "measured": measured, "plan": plan.model_dump(), "sft": str(sft.path),
              "sft_cached": sft.cached, "steps": base.train.steps, "batch_size": base.train.batch_size,
              "eval_records": len(records), "runs": len(models), "evals": 1 + len(others) + len(models),
              "columns": {n: {k: list(v) for k, v in c.items()} for n, c in columns.items()},
              "paired": stats["tests"]}
    (out / "ablation.json").write_text(json.dumps(record, indent=1))
    (out / "ablation.md").write_text(table + "\n")
    if results_md is not None:
        write_results_block(results_md, results_block(record, table, plot_dir, results_md.parent))
    return {"runs": len(models), "variants": len(plan.variants), "seeds": len(plan.seeds), **wall,
            "table": str(out / "ablation.md"), "results_md": str(results_md) if results_md else None}


def results_block(record: dict, table: str, plot_dir: Path, root: Path) -> str:
    """The generated part of RESULTS.md: hardware, wall time, settings, the table and the plots."""
    hw, wall, plan = record["hardware"], record["wall"], record["plan"]
    rel = os.path.relpath(plot_dir, root)
    lines = [
        f"Hardware: {hw['cpu']}, {hw['nproc']} logical CPUs, {hw['mem_gib']} GiB RAM, Python {hw['python']}.",
        f"Wall time of the call that wrote this: {wall['total_s']:.0f} s (SFT {wall['sft_s']:.0f} s"
        f"{' from the cache' if record['sft_cached'] else ''}, on-policy runs {wall['train_s']:.0f} s, "
        f"evaluation {wall['eval_s']:.0f} s; finished runs and evaluations found on disk cost nothing here). "
        f"As measured when they ran: {record['runs']} training runs "
        f"{record['measured']['runs_s']:.0f} s (pipeline time, Ray start excluded), "
        f"{record['evals']} evaluations {record['measured']['evals_s']:.0f} s.",
        f"Settings: base recipe `{plan['base']}` with {plan['overrides'] or 'no overrides'}; "
        f"{record['steps']} steps × {record['batch_size']} pairs per run; seeds {plan['seeds']}; "
        f"evaluation on {plan['eval']['studies']} `{plan['eval']['split']}` studies ({record['eval_records']} "
        f"report + VQA records), grounding on up to {plan['eval']['grounding_studies']} studies with lesions.",
        "Variants: " + "; ".join(f"`{k}` {_describe(v, plan['seeds'])}" for k, v in plan["variants"].items()) + ".",
        *(["Further warm starts: " + "; ".join(f"`{k}` {v}" for k, v in plan["warm_starts"].items()) + "."]
          if plan.get("warm_starts") else []),
        "", table, "",
        f"![ablation bars]({rel}/ablation_bars.png)", "",
        f"![training curves]({rel}/ablation_curves.png)", "",
        f"![per-finding F1, first seed]({rel}/ablation_per_finding_f1.png)",
    ]
    return "\n".join(lines)


def _describe(spec: dict, seeds: list[int]) -> str:
    v = as_variant(spec)
    parts = [f"loss {v.loss or '{}'}"] + ([f"overrides {v.overrides}"] if v.overrides else [])
    return ", ".join(parts + [f"seeds {v.seeds or seeds}"])


def write_results_block(path: Path, block: str) -> None:
    """Replace the generated block of `path` (between the markers), keeping the hand-written text around it."""
    text = path.read_text() if path.is_file() else "# Results\n\n"
    new = f"{BEGIN}\n{block}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + new + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + new + "\n"
    path.write_text(text)
