"""Combining the per-rank results of one data-parallel step into the step's metrics."""
from __future__ import annotations

from medpo_ray.training.edit_tokens import merge

# Counts add up over ranks; the rest of the loss diagnostics are means over each rank's kept pairs.
SUMMED = ("pairs", "skipped_pairs", "examples", "bad_examples")
# The same on every rank (set by the optimizer step, which all ranks take together): rank 0's value.
SHARED = ("step", "lr", "grad_norm", "skipped_step")
LISTS = ("bad", "trained_ids")
# When the step computed (epoch seconds): from the first rank's start to the last rank's end.
SPAN = {"t_start": min, "t_end": max}
# Counts by token and direction (training/edit_tokens.py): added up over ranks.
TOKEN_COUNTS = "edit_tokens"


def reduce_metrics(per_rank: list[dict]) -> dict:
    """Metrics of the whole step: counts summed, lists joined, diagnostics averaged over kept pairs."""
    out: dict = {}
    for key in LISTS:
        out[key] = [x for m in per_rank for x in m.get(key, [])]
    if any(TOKEN_COUNTS in m for m in per_rank):
        out[TOKEN_COUNTS] = merge(m[TOKEN_COUNTS] for m in per_rank if TOKEN_COUNTS in m)
    for key in SUMMED:
        if any(key in m for m in per_rank):
            out[key] = sum(float(m.get(key, 0.0)) for m in per_rank)
    for key, pick in SPAN.items():
        if any(key in m for m in per_rank):
            out[key] = pick(float(m[key]) for m in per_rank if key in m)
    for key in SHARED:
        if key in per_rank[0]:
            out[key] = per_rank[0][key]
    done = set(out)
    keys = [k for m in per_rank for k in m if k not in done]
    for key in dict.fromkeys(keys):
        pairs = [(float(m[key]), float(m.get("pairs", 0.0)) - float(m.get("skipped_pairs", 0.0)))
                 for m in per_rank if key in m]
        total = sum(w for _, w in pairs)
        out[key] = sum(v * w for v, w in pairs) / total if total > 0 else sum(v for v, _ in pairs) / len(pairs)
    return out
