"""When the stages computed: the share of a step's wall time in which two or more stages worked at once
(the pipeline's overlap: 0 means the stages took turns, as a sequential loop does)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


def overlap_share(intervals: Iterable[tuple[str, float, float]], start: float, end: float) -> float:
    """Share of [start, end] covered by two or more distinct stages' compute intervals (stage, t0, t1);
    parts of intervals outside the window do not count. 0.0 for an empty window."""
    if end <= start:
        return 0.0
    events: list[tuple[float, int, str]] = []
    for stage, t0, t1 in intervals:
        t0, t1 = max(t0, start), min(t1, end)
        if t1 > t0:
            events += [(t0, 1, stage), (t1, -1, stage)]
    events.sort(key=lambda e: (e[0], e[1]))  # at equal times, ends before starts: touching is not overlapping
    active: Counter[str] = Counter()
    busy, last = 0.0, start
    for t, delta, stage in events:
        if sum(1 for n in active.values() if n > 0) >= 2:
            busy += t - last
        last = t
        active[stage] += delta
    return busy / (end - start)
