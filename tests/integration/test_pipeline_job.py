"""`medpo-ray train` as a Ray job on a dedicated token-authenticated head, scraped by a real Prometheus.

The job is submitted with the `ray job submit` CLI, as KubeRay does: the repository is the job's working
directory (uploaded without the venv, artifacts, git data and caches) and the entry point is the repo's
venv python running `-m driver.cli train`. Prometheus loads the shipped scrape config and alert rules aimed
at this head. The run meets what a long run meets, so that every declared metric has something real to
count: a study whose image is corrupt (quarantined before the start), a span editor killed mid-call
(restarted, its records re-issued), and a guard so strict that its probe calls the policy worse than its
warm start. Every series Prometheus holds comes from the project's code in that job; the test writes none.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from medpo_ray.metrics import exported_names
from tests.integration.promstack import REPO, prometheus, ray_head, ray_scrape_config, wait_until
from tests.unit.deploy.test_dashboard_rules import dashboard_queries

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]

JOB = "medpo-train"
EXCLUDES = [".venv", "artifacts", ".git", ".hypothesis", "**/__pycache__", ".pytest_cache", ".ruff_cache",
            "*.egg-info"]
# A probe after every 2 steps, judged so strictly (any token type down by a millionth of a nat) that training
# at all makes it "worse than the warm start": the regression metrics and their alert then have a cause.
STRICT_GUARD = {"every": 2, "studies": 8, "logprob_studies": 4, "margin": 0.0, "max_token_drop": 1e-6,
                "min_token_count": 1}


def _job_status(head) -> str | None:
    out = head.cli("job", "status", "--address", head.dashboard_url, JOB).stdout
    found = re.search(rf"Job '{JOB}' (succeeded|failed|stopped)", out)
    return found.group(1) if found else None


def _data_with_a_corrupt_image(source: Path, dest: Path) -> str:
    """A copy of the embedded dataset whose first training study's image bytes are not an image; its id."""
    shutil.copytree(source, dest)
    studies = pq.read_table(dest / "studies.parquet")
    split = studies.column("split").to_pylist()
    victim = split.index("train")
    images = studies.column("image").to_pylist()
    images[victim] = b"\x89PNG\r\n\x1a\n truncated"
    pq.write_table(studies.set_column(studies.schema.get_field_index("image"), "image",
                                      pa.array(images, type=pa.binary())), dest / "studies.parquet")
    return studies.column("study_id")[victim].as_py()


class EditorKiller(threading.Thread):
    """Once the job logged its first step, stops the span editor's process, lets the next step's rollouts hand
    it a call, then kills it: the driver must see the call fail, restart the editor and re-issue the call."""

    def __init__(self, head, prom, out: Path):
        super().__init__(daemon=True)
        self.head, self.prom, self.out = head, prom, out
        self.pid: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            # The pid first (the Ray CLI takes seconds to answer, longer than the rest of the run would).
            self.pid = self._until("the span editor to start", self._editor_pid)
            self._until("the first step to be logged", self._steps_logged)
            os.kill(self.pid, signal.SIGSTOP)
            # Strict on-policy mode: the next step's rollouts start right after the step is logged. Whatever the
            # machine's speed, kill only once a rollout finished after the stop (the count Prometheus holds
            # 3 s after it, when earlier ones have been exported) or the pipeline stalled on the stopped
            # editor: either way an editor call is in flight when the kill lands.
            time.sleep(3)
            query = 'sum(ray_medpo_records_total{stage="rollout"})'
            before = self.prom.scalar(query) or 0
            deadline = time.monotonic() + 30
            while (self.prom.scalar(query) or 0) <= before and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(2)
            os.kill(self.pid, signal.SIGKILL)
        except BaseException as e:  # reported by the test
            self.error = e

    @staticmethod
    def _until(what: str, probe, timeout_s: float = 480):
        deadline = time.monotonic() + timeout_s
        while not (found := probe()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"editor killer: gave up waiting for {what}")
            time.sleep(0.1)
        return found

    def _editor_pid(self) -> int | None:
        listed = self.head.cli("list", "actors", "--address", self.head.dashboard_url, "--detail", "--format",
                               "json", "--filter", "class_name=SpanEditor", "--filter", "state=ALIVE")
        alive = json.loads(listed.stdout) if listed.stdout.lstrip().startswith("[") else []
        return int(alive[0]["pid"]) if alive else None

    def _steps_logged(self) -> bool:
        path = self.out / "metrics.jsonl"
        return path.exists() and path.read_text().count("\n") >= 1


@pytest.fixture(scope="module")
def job(pipeline_setup, tmp_path_factory):
    """The finished job: its status, logs, summary, its time span and the Prometheus that scraped it."""
    data = tmp_path_factory.mktemp("job-data") / "embedded"
    bad_study = _data_with_a_corrupt_image(pipeline_setup.data_dir, data)
    config = pipeline_setup.write("job", data={"path": str(data)}, guard=STRICT_GUARD)
    out = Path(pipeline_setup.recipe("job")["run"]["out_dir"])
    with ray_head(num_cpus=4) as head:
        wait_until("Ray to list its metrics targets", head.sd_file.exists, 60)
        with prometheus(ray_scrape_config(head)) as prom:
            began = time.time()
            submitted = head.cli("job", "submit", "--address", head.dashboard_url, "--submission-id", JOB,
                                 "--working-dir", str(REPO), "--runtime-env-json", json.dumps({"excludes": EXCLUDES}),
                                 "--no-wait", "--", sys.executable, "-m", "driver.cli", "train",
                                 "--config", str(config))
            assert submitted.returncode == 0, submitted.stdout + submitted.stderr
            killer = EditorKiller(head, prom, out)
            killer.start()
            status = wait_until("the training job to finish", lambda: _job_status(head), 600, interval_s=1)
            ended = time.time()
            killer.join(timeout=30)
            logs = head.cli("job", "logs", "--address", head.dashboard_url, JOB).stdout
            listing = head.cli("job", "list", "--address", head.dashboard_url).stdout
            summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else None
            yield {"status": status, "logs": logs, "listing": listing, "summary": summary, "prom": prom,
                   "out": out, "span": (began, ended), "killer": killer, "bad_study": bad_study}


def _seen(prom, expr: str, span: tuple[float, float]) -> list:
    """The series `expr` returned at any second of the job's run (a range query over its span)."""
    began, ended = span
    return prom.api("query_range", query=expr, start=f"{began:.3f}", end=f"{ended + 5:.3f}", step="1")["result"]


def test_the_submitted_job_trains_and_checkpoints(job):
    assert job["status"] == "succeeded", job["logs"][-5000:]
    summary = job["summary"]
    assert summary["steps"] == 4 and summary["trained"] == 16 and summary["lost"] == 0
    assert json.dumps(summary) in job["logs"]  # the CLI's last line, from the job's driver
    ckpt = Path(summary["checkpoint"])
    assert ckpt == job["out"] / "checkpoints" / "step-000004"
    assert (ckpt / "model" / "model.safetensors").is_file() and (ckpt / "driver_state.json").is_file()
    # The repository went to the cluster as a package (what a remote cluster needs), excludes applied.
    assert "gcs://_ray_pkg_" in job["listing"] and "'.venv'" in job["listing"]


def test_the_run_met_its_faults_and_went_on(job):
    assert job["killer"].error is None, job["killer"].error
    summary, logs = job["summary"], job["logs"]
    # The corrupt study's records were quarantined by name before anything started; nothing else was lost.
    assert summary["quarantined"] >= 1 and job["bad_study"] in logs
    state = json.loads((Path(summary["checkpoint"]) / "driver_state.json").read_text())
    assert state["ledger"]["reissued"].get("editor", 0) >= 1  # the killed editor's call was sent again
    assert "worse than its warm start" in logs  # the strict guard's verdict, as the driver logs it


def test_every_declared_metric_was_emitted_by_the_run(job):
    prom, span = job["prom"], job["span"]
    names = set(prom.api("label/__name__/values"))
    assert {n for n in names if n.startswith("ray_medpo_")} == exported_names()
    # The fault counters count the faults the run met (the values come from the job's processes).
    assert _seen(prom, 'sum(ray_medpo_bad_records_total{reason=~"data:.*"}) >= 1', span)
    assert _seen(prom, 'sum(ray_medpo_actor_restarts_total{stage="editor"}) >= 1', span)
    assert _seen(prom, "sum(ray_medpo_policy_regressions_total) >= 1", span)
    assert _seen(prom, 'sum(ray_medpo_critic_seconds_count{backend="reference"}) > 0', span)


def test_prometheus_counted_what_the_run_trained(job):
    prom, summary = job["prom"], job["summary"]
    # The job's driver has exited, so its series are no longer current: read what Prometheus stored.
    expected = {
        "sum(max_over_time(ray_medpo_pairs_trained_total[10m]))": summary["trained"],
        "sum(max_over_time(ray_medpo_learner_steps_total[10m]))": summary["steps"],
        'max(max_over_time(ray_medpo_policy_version{role="learner"}[10m]))': summary["steps"],
        "sum(max_over_time(ray_medpo_sample_staleness_count[10m]))": summary["trained"],
        'sum(max_over_time(ray_medpo_sample_staleness_bucket{le="0.5"}[10m]))': summary["trained"],  # on-policy
        "sum(max_over_time(ray_medpo_weight_sync_seconds_count[10m]))": summary["steps"],
        'sum(max_over_time(ray_medpo_records_total{stage="corruption",outcome="ok"}[10m]))': summary["trained"],
        "sum(max_over_time(ray_medpo_bad_records_total[10m]))": summary["quarantined"],
    }
    wait_until("Prometheus to hold the run's final counts",
               lambda: all(prom.scalar(q) == v for q, v in expected.items()), 30, interval_s=1)
    assert prom.scalar("max(max_over_time(ray_medpo_checkpoint_timestamp_seconds[10m]))") > 0
    assert prom.query('max_over_time(ray_medpo_loss{term="total"}[10m])')
    assert prom.query('max_over_time(ray_medpo_reward_accuracy{pair="pref"}[10m])')
    assert prom.scalar('max(max_over_time(ray_medpo_queue_capacity{queue="learner"}[10m]))') == 4  # one step
    assert prom.query('max_over_time(ray_medpo_queue_capacity{queue="rollout"}[10m])')
    # The live vLLM-vs-learner check ran on every step and found the engines serving the trained weights.
    # The gauge holds the last step's value until the next one: Ray exports it every ~10 s, so Prometheus
    # holds some of the steps' values (not necessarily the worst), each exactly as the run logged it.
    steps = [json.loads(x) for x in (job["out"] / "metrics.jsonl").read_text().splitlines()]
    gaps = [s["logprob_mismatch"] for s in steps]
    assert len(gaps) == summary["steps"] and 0 <= max(gaps) < 1e-4
    seen = prom.scalar("max(max_over_time(ray_medpo_logprob_mismatch[10m]))")
    assert any(seen == pytest.approx(g, abs=1e-12) for g in gaps), (seen, gaps)


def _rules() -> dict[str, str]:
    groups = yaml.safe_load((REPO / "deploy/prometheus/rules.yaml").read_text())["groups"]
    return {r["alert"]: r["expr"] for g in groups for r in g["rules"]}


def test_every_alert_rule_selects_series_the_run_emitted(job):
    prom, span = job["prom"], job["span"]
    loaded = {r["name"]: r for g in prom.api("rules")["groups"] for r in g["rules"]}
    assert set(loaded) == set(_rules()) and all(r["health"] == "ok" for r in loaded.values()), loaded
    for alert, expr in _rules().items():
        selectors = re.findall(r"ray_medpo_\w+(?:\{[^}]*\})?", expr)
        assert selectors, alert
        for sel in selectors:
            assert _seen(prom, f"count({sel})", span), f"{alert}: {sel} selects no series of the run"
    # The strict guard's verdict reached the alert: Prometheus held it pending (its `for` is longer than the run).
    pending = _seen(prom, 'ALERTS{alertname="MedpoPolicyWorseThanWarmStart"}', span)
    assert pending and pending[0]["metric"]["alertstate"] == "pending"


def test_every_dashboard_panel_query_returns_series_of_the_run(job):
    prom, span = job["prom"], job["span"]
    empty = [title for title, expr in dashboard_queries().items() if not _seen(prom, expr, span)]
    assert not empty, f"panels with no data from a real run: {empty}"
