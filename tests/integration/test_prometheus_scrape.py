"""The metrics transport: values recorded through actors/metrics.py reach a real Prometheus exactly.

This test checks the path, not the emitters: a token-authenticated Ray head runs a job (submitted with the
`ray job submit` CLI, as KubeRay does) whose driver and one actor record known amounts of every metric of
medpo_ray.metrics.SPECS, and Prometheus (the shipped deploy/prometheus/scrape-ray.yaml, its file-SD path
pointed at this cluster's temp dir) must hold exactly those amounts, Ray's export rules applied: names,
labels, histogram sums, counters from two processes. That every metric is emitted by the project's own
code in a real run, and that every alert rule and dashboard panel selects the run's series, is
test_pipeline_job.py's job. Here also: the cluster's auth token appears in no label, every port of the
cluster is on loopback, and the Ray CLI is refused with a wrong token.
The cluster exports every second, so Ray would drop a gauge 2 s after it was set: gauges still being
there when checked shows actors/metrics.py's keeper at work.
Run as a module (`python -m tests.integration.test_prometheus_scrape STOP_FILE`) it is that job.
"""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

from medpo_ray.metrics import SPECS, exported_names
from tests.integration.promstack import REPO, prometheus, ray_head, ray_scrape_config, wait_until

pytestmark = pytest.mark.integration

ACTOR_INCS = (1, 2, 4)  # the actor adds these to every counter
DRIVER_INC = 5  # then the driver adds this
ACTOR_GAUGES = (1.5, 2.5)  # the actor sets every gauge to these in turn (2.5 stays)
DRIVER_GAUGE = 4.0
ACTOR_OBS = (0.25, 1, 3)  # observations of every histogram by the actor
DRIVER_OBS = (2,)
LABEL_VALUE = "test"
# Labels Ray and Prometheus add to every series; the rest must be exactly the spec's labels.
RAY_LABELS = {"__name__", "instance", "job", "Component", "NodeAddress", "SessionName", "Version",
              "WorkerId", "otel_scope_name", "otel_scope_schema_url", "otel_scope_version"}


def _record(incs: tuple, gauges: tuple, observations: tuple) -> None:
    from actors import metrics

    for s in SPECS:
        labels = dict.fromkeys(s.labels, LABEL_VALUE)
        for v in {"counter": incs, "gauge": gauges, "histogram": observations}[s.kind]:
            {"counter": metrics.inc, "gauge": metrics.set, "histogram": metrics.observe}[s.kind](
                s.name, v, **labels)


def emit_job(stop_file: str) -> None:
    """The job: record from an actor and from the driver, then stay alive until `stop_file` appears."""
    import ray

    ray.init()

    @ray.remote(num_cpus=0)
    class Emitter:
        def run(self) -> bool:
            _record(ACTOR_INCS, ACTOR_GAUGES, ACTOR_OBS)
            return True

    actor = Emitter.remote()
    ray.get(actor.run.remote())
    _record((DRIVER_INC,), (DRIVER_GAUGE,), DRIVER_OBS)
    print("medpo metrics recorded", flush=True)
    # Series of an exiting process may vanish before a scrape: keep both alive until the test is done.
    deadline = time.monotonic() + 300
    while not Path(stop_file).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    del actor


def _ray_histogram_sum(buckets: tuple[float, ...], observations: tuple[float, ...]) -> float:
    """The `_sum` Ray exports: each observation replaced by its bucket's midpoint (0 is the first
    bucket's lower bound; the overflow bucket counts as twice the last bound), as Ray 2.60 documents."""
    mids = [(lo + hi) / 2 for lo, hi in zip((0.0, *buckets[:-1]), buckets, strict=True)] + [2 * buckets[-1]]
    return sum(mids[next((i for i, b in enumerate(buckets) if v <= b), len(buckets))] for v in observations)


def _expected() -> dict[str, float]:
    """PromQL expression -> the value the job's records imply."""
    expected = {}
    for s in SPECS:
        if s.kind == "counter":
            expected[f"sum({s.exported})"] = sum(ACTOR_INCS) + DRIVER_INC
        elif s.kind == "gauge":
            expected[f"max({s.exported})"] = max(ACTOR_GAUGES[-1], DRIVER_GAUGE)
            expected[f"min({s.exported})"] = min(ACTOR_GAUGES[-1], DRIVER_GAUGE)
        else:
            obs = ACTOR_OBS + DRIVER_OBS
            expected[f"sum({s.exported}_count)"] = len(obs)
            expected[f"sum({s.exported}_sum)"] = (_ray_histogram_sum(s.buckets, ACTOR_OBS)
                                                   + _ray_histogram_sum(s.buckets, DRIVER_OBS))
            expected[f'sum({s.exported}_bucket{{le=~"1|1.0"}})'] = sum(v <= 1 for v in obs)
            expected[f'sum({s.exported}_bucket{{le="+Inf"}})'] = len(obs)
    return expected


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A Ray head running the emitting job, and Prometheus scraping it with the shipped config."""
    stop_file = tmp_path_factory.mktemp("emit") / "stop"
    with ray_head(num_cpus=1) as head:
        entry = f"cd {REPO} && {sys.executable} -m tests.integration.test_prometheus_scrape {stop_file}"
        submitted = head.cli("job", "submit", "--address", head.dashboard_url, "--no-wait",
                             "--submission-id", "medpo-metrics", "--", "bash", "-c", entry)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        wait_until("Ray to list its metrics targets", head.sd_file.exists, 60)
        with prometheus(ray_scrape_config(head)) as prom:
            yield head, prom, stop_file
            stop_file.touch()
            status = wait_until("the job to finish", lambda: _job_status(head), 60)
            assert status == "succeeded", head.cli("job", "logs", "--address", head.dashboard_url,
                                                   "medpo-metrics").stdout


def _job_status(head) -> str | None:
    """The job's final status (`ray job status` prints e.g. "Job 'x' succeeded"), or None while it runs."""
    out = head.cli("job", "status", "--address", head.dashboard_url, "medpo-metrics").stdout
    found = re.search(r"Job 'medpo-metrics' (succeeded|failed|stopped)", out)
    return found.group(1) if found else None


def test_prometheus_holds_every_metric_with_the_recorded_values(stack):
    head, prom, _ = stack
    expected = _expected()
    deadline = time.monotonic() + 120
    while (wrong := {e: (got, v) for e, v in expected.items() if (got := prom.scalar(e)) != pytest.approx(v)}) \
            and time.monotonic() < deadline:
        time.sleep(1)
    assert not wrong, f"Prometheus (got) disagrees with the job's records (expected): {wrong}"

    names = set(prom.api("label/__name__/values"))
    assert {n for n in names if n.startswith("ray_medpo_")} == exported_names()
    # Two processes recorded: each exports its own series, told apart by WorkerId.
    assert len(prom.query("ray_medpo_pairs_trained_total")) == 2


def test_series_carry_exactly_the_declared_labels_and_no_secret(stack):
    head, prom, _ = stack
    wait_until("medpo series", lambda: prom.query('count({__name__=~"ray_medpo_.*"})'), 120)
    by_name = {}
    for series in prom.api("series", **{"match[]": '{__name__=~"ray_medpo_.*"}'}):
        by_name.setdefault(series["__name__"], []).append(series)
        assert all(head.token not in v for v in series.values()), "the auth token leaked into a label"
    for s in SPECS:
        for name in s.series():
            for series in by_name[name]:
                own = set(series) - RAY_LABELS - {"le"}
                assert own == set(s.labels), (name, series)
                assert all(series[k] == LABEL_VALUE for k in own)


def test_the_local_cluster_listens_on_loopback_only(stack):
    head, _, _ = stack
    listening = head.listening()
    assert (("127.0.0.1", head.metrics_port) in listening and ("127.0.0.1", head.dashboard_port) in listening)
    assert {a for a, _ in listening} <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening


def test_cli_refuses_a_wrong_token(stack):
    head, _, _ = stack
    refused = head.cli("job", "list", "--address", head.dashboard_url, token="0" * 64, timeout_s=60)
    assert refused.returncode != 0
    accepted = head.cli("job", "list", "--address", head.dashboard_url, timeout_s=60)
    assert accepted.returncode == 0 and "medpo-metrics" in accepted.stdout


if __name__ == "__main__":
    emit_job(sys.argv[1])
