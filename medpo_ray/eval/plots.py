"""PNG plots of evaluations: per-finding F1 bars, training curves from metrics.jsonl, ablation bars."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

CURVES = (("loss", "total loss"), ("loss_pref", "preference term"), ("reward_acc_pref", "reward accuracy"),
          ("loss_vis", "visual term"), ("loss_kl", "token KL"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a server
    import matplotlib.pyplot as plt

    return plt


def per_finding_bars(results: dict[str, dict], path: Path) -> Path:
    """Grouped bars of each finding class's F1 (clinical efficacy), one bar per model."""
    plt = _pyplot()
    classes = sorted({c for r in results.values() for c in r["clinical"]["per_class"]})
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(classes) * max(1, len(results))), 3.6))
    width = 0.8 / max(1, len(results))
    for k, (name, r) in enumerate(results.items()):
        per = r["clinical"]["per_class"]
        ys = [(per.get(c, {}).get("f1") or 0.0) for c in classes]
        ax.bar([i + k * width for i in range(len(classes))], ys, width, label=name)
    ax.set_xticks([i + width * (len(results) - 1) / 2 for i in range(len(classes))], classes, rotation=30,
                  ha="right")
    ax.set_ylabel("F1")
    ax.set_ylim(0, 1)
    ax.set_title("Clinical efficacy per finding (labeler, finding/side)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def read_metrics_log(path: Path) -> list[dict]:
    """The per-step rows of a run's metrics.jsonl (unreadable lines are skipped, as a crashed run may leave one)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return [r for r in rows if isinstance(r, dict) and "step" in r]


def training_curves(logs: dict[str, Sequence[dict]], path: Path) -> Path:
    """Loss terms and reward accuracy against step, one line per name (rows of several seeds averaged per step)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(CURVES), figsize=(3.2 * len(CURVES), 3.0))
    for ax, (key, title) in zip(axes, CURVES, strict=True):
        for k, (name, rows) in enumerate(logs.items()):
            by_step: dict[int, list[float]] = {}
            for r in rows:
                if isinstance(r.get(key), int | float):
                    by_step.setdefault(r["step"], []).append(r[key])
            if by_step:
                steps = sorted(by_step)
                # A fixed colour per name, so a name keeps its colour in panels where others have no value.
                ax.plot(steps, [sum(by_step[t]) / len(by_step[t]) for t in steps], label=name, lw=1, color=f"C{k}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    fig.suptitle("per-step learner metrics (mean over seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ablation_bars(columns: dict[str, dict[str, tuple]], keys: Sequence[tuple[str, str]], path: Path) -> Path:
    """Mean ± std bars per variant for a few headline metrics (one panel each)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(3.0 * len(keys), 3.2))
    names = list(columns)
    for ax, (key, title) in zip(axes, keys, strict=True):
        means = [columns[n][key][0] or 0.0 for n in names]
        stds = [columns[n][key][1] or 0.0 for n in names]
        ax.bar(range(len(names)), means, yerr=stds, capsize=3)
        # Variants differ by a few points: an axis from 0 would hide them (the title says so).
        lo = min(m - s for m, s in zip(means, stds, strict=True))
        hi = max(m + s for m, s in zip(means, stds, strict=True))
        pad = max(hi - lo, 1e-3) * 0.25
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{title} (zoomed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
