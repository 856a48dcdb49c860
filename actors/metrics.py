"""Ray metrics for medpo-ray: one `ray.util.metrics` object per spec of medpo_ray.metrics, per process.

Actors and the driver call `inc` / `set` / `observe` / `timed` with a name from SPECS and its declared
labels; anything else is a ValueError, so a typo cannot create a series the dashboard and alerts do
not know, and a label cannot carry free text. Ray's metrics agent exports what each process records
on the node's `--metrics-export-port` (about every 10 s; `RAY_metrics_report_interval_ms` changes it).

Ray drops a gauge that was not set again within two export intervals, so a value set once (the last
checkpoint's time, the policy version between slow steps) would vanish from Prometheus and its alert
could never fire. A daemon thread therefore re-sets each process's last gauge values every second,
for as long as the process lives; a dead actor's gauges still disappear, as they should.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from ray.util import metrics as ray_metrics

from medpo_ray.metrics import MetricSpec, check_labels, spec

GAUGE_REFRESH_S = 1.0  # Ray's shortest export interval is 1 s, so its gauge TTL is at least 2 s
_gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
_gauges_lock = threading.Lock()
_keeper: threading.Thread | None = None


@cache
def _metric(name: str) -> ray_metrics.Metric:
    # Cached per process: Ray keeps one recorder per metric object, and each actor is its own process.
    s = spec(name)
    if s.kind == "counter":
        return ray_metrics.Counter(s.name, description=s.description, tag_keys=s.labels)
    if s.kind == "gauge":
        return ray_metrics.Gauge(s.name, description=s.description, tag_keys=s.labels)
    return ray_metrics.Histogram(s.name, description=s.description, boundaries=list(s.buckets),
                                 tag_keys=s.labels)


def _checked(name: str, kind: str, value: float, labels: dict[str, object]) -> tuple[MetricSpec, dict]:
    s = spec(name)
    if s.kind != kind:
        raise ValueError(f"metric {name} is a {s.kind}, not a {kind}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"metric {name}: value must be a number, got {type(value).__name__}")
    return s, check_labels(s, labels)


def inc(name: str, value: float = 1.0, **labels: str) -> None:
    """Add `value` (>= 0, finite) to counter `name`; adding 0 records nothing."""
    _, tags = _checked(name, "counter", value, labels)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"counter {name}: increment must be finite and >= 0, got {value}")
    if value > 0:  # Ray refuses 0; a batch with nothing to count is normal
        _metric(name).inc(value, tags=tags)


# Named like the verb callers expect (`metrics.set(...)`); it shadows the builtin inside this module only.
def set(name: str, value: float, **labels: str) -> None:
    """Set gauge `name` (NaN is allowed: a NaN loss is worth seeing on the dashboard)."""
    global _keeper
    _, tags = _checked(name, "gauge", value, labels)
    with _gauges_lock:  # under the lock, so the keeper cannot re-set an older value after this one
        _metric(name).set(value, tags=tags)
        _gauges[(name, tuple(sorted(tags.items())))] = value
        if _keeper is None or not _keeper.is_alive():  # also after a fork, which keeps no threads
            _keeper = threading.Thread(target=_keep_gauges, name="medpo-gauge-keeper", daemon=True)
            _keeper.start()


def _keep_gauges() -> None:
    while True:
        time.sleep(GAUGE_REFRESH_S)
        with _gauges_lock:
            for (name, tags), value in _gauges.items():
                _metric(name).set(value, tags=dict(tags))


def observe(name: str, value: float, **labels: str) -> None:
    """Record one finite observation in histogram `name`."""
    _, tags = _checked(name, "histogram", value, labels)
    if not math.isfinite(value):
        raise ValueError(f"histogram {name}: observation must be finite, got {value}")
    _metric(name).observe(value, tags=tags)


@contextmanager
def timed(name: str, **labels: str) -> Iterator[None]:
    """Observe the wall time of the block in seconds-histogram `name`, also when it raises."""
    _checked(name, "histogram", 0.0, labels)  # fail before the work, not after it
    t0 = time.perf_counter()
    try:
        yield
    finally:
        observe(name, time.perf_counter() - t0, **labels)
