"""`medpo-ray train` as a Ray job on a dedicated token-authenticated head, scraped by a real Prometheus.

The job is submitted with the `ray job submit` CLI, as KubeRay does: the repository is the job's working
directory (uploaded without the venv, artifacts, git data and caches) and the entry point is the repo's
venv python running `-m driver.cli train`. Prometheus loads the shipped scrape config aimed at this
head; the training counters it stored must agree with the run's summary.json.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tests.integration.promstack import REPO, prometheus, ray_head, ray_scrape_config, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JOB = "medpo-train"
EXCLUDES = [".venv", "artifacts", ".git", ".hypothesis", "**/__pycache__", ".pytest_cache", ".ruff_cache",
            "*.egg-info"]


def _job_status(head) -> str | None:
    out = head.cli("job", "status", "--address", head.dashboard_url, JOB).stdout
    found = re.search(rf"Job '{JOB}' (succeeded|failed|stopped)", out)
    return found.group(1) if found else None


@pytest.fixture(scope="module")
def job(pipeline_setup):
    """The finished job: its status, logs, summary and the Prometheus that scraped it (still running)."""
    config = pipeline_setup.write("job")
    out = Path(pipeline_setup.recipe("job")["run"]["out_dir"])
    with ray_head(num_cpus=4) as head:
        wait_until("Ray to list its metrics targets", head.sd_file.exists, 60)
        with prometheus(ray_scrape_config(head)) as prom:
            submitted = head.cli("job", "submit", "--address", head.dashboard_url, "--submission-id", JOB,
                                 "--working-dir", str(REPO), "--runtime-env-json", json.dumps({"excludes": EXCLUDES}),
                                 "--no-wait", "--", sys.executable, "-m", "driver.cli", "train",
                                 "--config", str(config))
            assert submitted.returncode == 0, submitted.stdout + submitted.stderr
            status = wait_until("the training job to finish", lambda: _job_status(head), 600, interval_s=1)
            logs = head.cli("job", "logs", "--address", head.dashboard_url, JOB).stdout
            listing = head.cli("job", "list", "--address", head.dashboard_url).stdout
            summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else None
            yield {"status": status, "logs": logs, "listing": listing, "summary": summary, "prom": prom, "out": out}


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
