"""Markdown tables of headline metrics: one row per metric, one column per model or ablation variant."""
from __future__ import annotations

from collections.abc import Sequence

from medpo_ray.eval.metrics import mean_std
from medpo_ray.eval.suite import HEADLINE

_DIGITS = {"bleu": 1}


def _fmt(key: str, value: float | None) -> str:
    return "–" if value is None else f"{value:.{_DIGITS.get(key, 3)}f}"


def markdown_table(columns: dict[str, dict[str, float | None]]) -> str:
    """Single numbers per column (e.g. SFT vs aligned): | metric | col1 | col2 | ..."""
    names = list(columns)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key, text, higher in HEADLINE:
        arrow = "↑" if higher else "↓"
        lines.append(f"| {text} {arrow} | " + " | ".join(_fmt(key, columns[n].get(key)) for n in names) + " |")
    return "\n".join(lines)


def aggregate(runs: Sequence[dict[str, float | None]]) -> dict[str, tuple[float | None, float | None, int]]:
    """(mean, sample std, n) per headline key over runs (seeds)."""
    return {key: mean_std([r.get(key) for r in runs]) for key, _, _ in HEADLINE}


def markdown_mean_std(columns: dict[str, dict[str, tuple[float | None, float | None, int]]]) -> str:
    """Mean ± std per column (ablation variants over seeds), with the number of seeds in the header."""
    names = list(columns)
    seeds = [max((v[2] for v in columns[n].values()), default=0) for n in names]
    head = [f"{n} (n={k})" for n, k in zip(names, seeds, strict=True)]
    lines = ["| metric | " + " | ".join(head) + " |", "|---|" + "---:|" * len(names)]
    for key, text, higher in HEADLINE:
        cells = []
        for n in names:
            m, sd, k = columns[n][key]
            cells.append("–" if m is None else (f"{_fmt(key, m)} ± {_fmt(key, sd)}" if k > 1 else _fmt(key, m)))
        lines.append(f"| {text} {'↑' if higher else '↓'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
