"""Paired statistics over evaluation items: intervals and tests that say whether two models differ.

Every model of a study is scored on the same records (eval/items.py), so differences are paired: the
test resamples records, not models, and a record that both get right or both get wrong says nothing.
- `bootstrap_mean`: the mean of per-record values with a 95% percentile interval (records resampled).
- `paired_bootstrap`: mean difference a − b over the records both have, its 95% interval and a
  two-sided p-value (twice the share of resampled differences on the far side of 0, capped at 1).
- `mcnemar`: the exact (binomial) McNemar test on 0/1 outcomes.
With several seeds per variant, `seed_mean` averages each record's value over the seeds first, so the
test is over test records with the training seeds' spread folded into each record's value.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from math import comb

import numpy as np

N_BOOT = 10_000


def seed_mean(per_seed: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per record, the mean over the seeds that scored it."""
    keys = set().union(*per_seed) if per_seed else set()
    out = {}
    for k in keys:
        vals = [s[k] for s in per_seed if k in s]
        out[k] = float(sum(vals) / len(vals))
    return out


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def bootstrap_mean(values: Mapping[str, float], n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """{"mean", "lo", "hi", "n"}: the mean over records and its 95% bootstrap interval."""
    x = np.array([values[k] for k in sorted(values)], dtype=float)
    if len(x) == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    idx = _rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    means = x[idx].mean(axis=1)
    return {"mean": float(x.mean()), "lo": float(np.percentile(means, 2.5)),
            "hi": float(np.percentile(means, 97.5)), "n": len(x)}


def paired_bootstrap(a: Mapping[str, float], b: Mapping[str, float], n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """{"diff", "lo", "hi", "p", "n"}: mean of a − b over the shared records, 95% interval, two-sided p."""
    keys = sorted(set(a) & set(b))
    d = np.array([a[k] - b[k] for k in keys], dtype=float)
    if len(d) == 0:
        return {"diff": None, "lo": None, "hi": None, "p": None, "n": 0}
    idx = _rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    means = d[idx].mean(axis=1)
    if not d.any():
        p = 1.0
    else:
        # Share of resampled means on the other side of zero from the observed one (ties count half).
        observed = d.mean()
        far = (means <= 0).mean() - 0.5 * (means == 0).mean() if observed > 0 else \
            (means >= 0).mean() - 0.5 * (means == 0).mean()
        p = min(1.0, 2 * max(far, 1 / n_boot))
    return {"diff": float(d.mean()), "lo": float(np.percentile(means, 2.5)),
            "hi": float(np.percentile(means, 97.5)), "p": float(p), "n": len(d)}


def mcnemar(a: Mapping[str, float], b: Mapping[str, float]) -> dict:
    """Exact McNemar on 0/1 outcomes of the shared records: {"a_only", "b_only", "p"} (two-sided binomial)."""
    keys = set(a) & set(b)
    a_only = sum(1 for k in keys if a[k] >= 0.5 > b[k])
    b_only = sum(1 for k in keys if b[k] >= 0.5 > a[k])
    n = a_only + b_only
    if n == 0:
        return {"a_only": 0, "b_only": 0, "p": 1.0}
    tail = sum(comb(n, i) for i in range(min(a_only, b_only) + 1)) / 2**n
    return {"a_only": a_only, "b_only": b_only, "p": min(1.0, 2 * tail)}


def metric_items(items: Mapping[str, Mapping[str, float]], metric: str) -> dict[str, float]:
    """record id -> value of one item metric, over the records it applies to."""
    return {k: float(v[metric]) for k, v in items.items() if metric in v}
