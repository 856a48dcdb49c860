"""Which tokens a learner step pushes down and up: the evidence that showed lopsided counterfactuals.

The preference term raises the policy's log-prob of the edited tokens of y+ and lowers that of the edited
tokens of y- (with the paper's ω_u = 0 nothing else moves through it). Counting them by token, per step,
shows at once when one word is only ever pushed one way: 300 steps of "No -> A" counterfactuals took a
sentence-opening " A" from log-prob -1.0 to -3.9 on gold reports (RESULTS.md).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from medpo_ray.losses.batch import X_NEG, X_POS, PreferenceBatch

DIRECTIONS = {X_POS: "up", X_NEG: "down"}


def edit_token_counts(batch: PreferenceBatch, decode: Callable[[int], str]) -> dict[str, Counter]:
    """{"up": Counter(token text), "down": ...} over the edited tokens of the (x, y+) and (x, y-) rows."""
    out = {d: Counter() for d in DIRECTIONS.values()}
    for row in range(batch.input_ids.shape[0]):
        direction = DIRECTIONS.get(int(batch.row_pair[row]))
        if direction is None:
            continue
        ids = batch.input_ids[row][batch.edit_mask[row].bool()].tolist()
        out[direction].update(decode(i) for i in ids)
    return out


def merge(parts: Iterable[Mapping[str, Mapping[str, int]]]) -> dict[str, dict[str, int]]:
    """Counts of several micro-batches or ranks added up, most pushed first."""
    total = {d: Counter() for d in DIRECTIONS.values()}
    for part in parts:
        for d, counts in part.items():
            total[d].update(counts)
    return {d: dict(c.most_common()) for d, c in total.items()}

