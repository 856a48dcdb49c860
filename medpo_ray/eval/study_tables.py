"""The study's paired tests as markdown: every column against the warm start and against a baseline variant.

Each cell is the difference (column − reference) of a per-record metric averaged over the column's seeds,
with its 95% paired-bootstrap interval over the test records and the two-sided p-value; for the 0/1
metrics the exact McNemar p on the first seed is given too. Only a p below 0.05 is called a difference.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from medpo_ray.eval.stats import bootstrap_mean, mcnemar, metric_items, paired_bootstrap, seed_mean

# (item metric, label, higher is better, 0/1 outcome)
TESTED = (("exact", "exact findings", True, True), ("hallucinated", "hallucinated findings / report", False, False),
          ("critic_edits", "critic edits / report", False, False), ("laterality", "laterality", True, True),
          ("count", "count", True, True), ("vqa_closed", "VQA closed", True, True), ("vqa_open", "VQA open", True, True))


def _cell(t: dict, higher: bool) -> str:
    if t["diff"] is None:
        return "–"
    better = (t["diff"] > 0) == higher
    mark = "" if t["p"] >= 0.05 else (" ✓" if better else " ✗")
    return f"{t['diff']:+.3f} [{t['lo']:+.3f}, {t['hi']:+.3f}] p={t['p']:.3g}{mark}"


def paired_tables(items: Mapping[str, Sequence[Mapping[str, dict]]], references: Sequence[str]) -> dict:
    """{"tests": {ref: {column: {metric: test}}}, "means": {column: {metric: mean with 95% CI}}, "markdown"}.

    `items`: column -> per-seed evaluation items (eval/items.py). Columns are tested against each reference.
    """
    pooled = {col: {m: seed_mean([metric_items(run, m) for run in runs]) for m, *_ in TESTED}
              for col, runs in items.items()}
    means = {col: {m: bootstrap_mean(vals) for m, vals in by_metric.items()} for col, by_metric in pooled.items()}
    tests: dict = {}
    lines = ["Means with 95% intervals (paired bootstrap over test records, 10,000 resamples; per-record "
             "values averaged over a column's seeds):", "",
             "| metric | " + " | ".join(items) + " |", "|---|" + "---:|" * len(items)]
    for m, label, higher, _ in TESTED:
        cells = []
        for col in items:
            b = means[col][m]
            cells.append("–" if b["mean"] is None else f"{b['mean']:.3f} [{b['lo']:.3f}, {b['hi']:.3f}]")
        lines.append(f"| {label} {'↑' if higher else '↓'} | " + " | ".join(cells) + " |")
    for ref in references:
        tests[ref] = {}
        cols = [c for c in items if c != ref]
        lines += ["", f"Paired differences against `{ref}` (column − {ref}; ✓ better, ✗ worse at p < 0.05; "
                      "McNemar exact p on the first seed for 0/1 outcomes):", "",
                  "| metric | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for m, label, higher, binary in TESTED:
            cells = []
            for col in cols:
                t = paired_bootstrap(pooled[col][m], pooled[ref][m])
                if binary:
                    t["mcnemar_p"] = mcnemar(metric_items(items[col][0], m), metric_items(items[ref][0], m))["p"]
                tests[ref].setdefault(col, {})[m] = t
                cells.append(_cell(t, higher) + (f" (McNemar {t['mcnemar_p']:.3g})" if binary and t["diff"] is not None else ""))
            lines.append(f"| {label} {'↑' if higher else '↓'} | " + " | ".join(cells) + " |")
    return {"tests": tests, "means": means, "markdown": "\n".join(lines)}
