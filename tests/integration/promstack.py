"""A real Ray head and a real Prometheus on this machine, for integration tests that check metrics.

`ray_head()` starts `ray start --head --block` with its own temp dir, free ports, token auth, every
port on loopback and a 1 s metrics report interval; `prometheus(config)` starts Debian's
/usr/bin/prometheus on a loopback port with a tmp storage dir; `ray_scrape_config(head)` is the
shipped scrape config aimed at a head. Both stop only the processes they started (never `ray stop`,
which would kill every Ray on the machine, other tests' included). Waits poll with a deadline.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
RAY = str(Path(sys.executable).with_name("ray"))


def require_binary(path: str) -> str:
    """`path` if it is an executable; else fail the test (never skip) with the set-up command."""
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} not found: run `make setup-test` (as root it installs Debian's prometheus)")
    return path


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, probe: Callable[[], Any], timeout_s: float, interval_s: float = 0.5) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what} (last probe: {last!r})")


def stop_tree(proc: subprocess.Popen, timeout_s: float = 3) -> None:
    """Terminate `proc` and every descendant it started, then kill what is left after `timeout_s`."""
    # Ray's gcs_server and raylet drain for many seconds on SIGTERM; a test cluster needs no drain.
    try:
        root = psutil.Process(proc.pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    proc.wait(timeout=5)


@dataclass
class RayHead:
    """A running single-node Ray cluster started by this test session."""

    temp_dir: Path
    port: int
    dashboard_port: int
    metrics_port: int
    token: str
    proc: subprocess.Popen
    log: Path

    @property
    def dashboard_url(self) -> str:
        """The job server / dashboard address for `ray job submit --address`."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def sd_file(self) -> Path:
        """The file-SD targets Ray writes for Prometheus (under its temp dir)."""
        return self.temp_dir / "prom_metrics_service_discovery.json"

    def env(self, token: str | None = None) -> dict[str, str]:
        """Environment for a Ray CLI or driver process talking to this cluster (`token` overrides)."""
        return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token or self.token,
                "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

    def listening(self) -> set[tuple[str, int]]:
        """(address, port) of every TCP socket the cluster's processes listen on."""
        addrs = set()
        for p in [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]:
            try:
                conns = p.net_connections(kind="tcp")
            except psutil.NoSuchProcess:
                continue
            addrs |= {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
        return addrs

    def cli(self, *args: str, token: str | None = None, timeout_s: float = 120) -> subprocess.CompletedProcess:
        """Run `ray <args>` against this cluster; output captured as text."""
        return subprocess.run([RAY, *args], env=self.env(token), capture_output=True, text=True,
                              timeout=timeout_s)


@contextmanager
def ray_head(num_cpus: int = 2, report_interval_ms: int = 1000, timeout_s: float = 120) -> Iterator[RayHead]:
    """Start a token-authenticated Ray head; yield it; stop exactly its processes and remove its dir."""
    # Ray's unix sockets live under the temp dir and must fit in 107 bytes: pytest's tmp_path is too long.
    temp_dir = Path(tempfile.mkdtemp(prefix="medpo-ray-", dir="/tmp"))
    port, dash, metrics, client, agent, agent_grpc, renv, autoscaler_m, dash_m = (free_port() for _ in range(9))
    token = secrets.token_hex(32)
    log = temp_dir / "head.log"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
           # Every process of this cluster (workers, job drivers) inherits it: export each 1 s, not 10 s.
           "RAY_metrics_report_interval_ms": str(report_interval_ms),
           # The autoscaler's and dashboard's own metrics ports are fixed (44217, 44227) unless set:
           # free ones keep two clusters on one machine from scraping each other.
           "AUTOSCALER_METRIC_PORT": str(autoscaler_m), "DASHBOARD_METRIC_PORT": str(dash_m),
           # Ray turns a loopback --node-ip-address into the host's address, and then binds its metrics
           # port, GCS and raylet on every interface; this switch (read when `ray` is imported) keeps the
           # node on 127.0.0.1 so that every port of the cluster listens on loopback only.
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    cmd = [RAY, "start", "--head", "--block", f"--temp-dir={temp_dir}", f"--num-cpus={num_cpus}",
           "--node-ip-address=127.0.0.1",
           f"--port={port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
           f"--metrics-export-port={metrics}", f"--ray-client-server-port={client}",
           f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
           f"--runtime-env-agent-port={renv}", "--disable-usage-stats"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    head = RayHead(temp_dir, port, dash, metrics, token, proc, log)
    try:
        def started() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"ray start exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            return "block forever" in log.read_text()
        wait_until("the Ray head to start", started, timeout_s)
        yield head
    finally:
        stop_tree(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)


def ray_scrape_config(head: RayHead) -> dict:
    """The shipped deploy/prometheus/scrape-ray.yaml aimed at `head`: its file-SD targets, its rules,
    a 1 s scrape and evaluation interval."""
    config = yaml.safe_load((REPO / "deploy/prometheus/scrape-ray.yaml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(REPO / "deploy/prometheus" / f) for f in config["rule_files"]]
    [job] = config["scrape_configs"]
    # Ray rewrites the file as nodes register; re-reading it each second (not each minute) keeps tests
    # short when Prometheus misses a rewrite.
    job["file_sd_configs"][0].update(files=[str(head.sd_file)], refresh_interval="1s")
    return config


@dataclass
class Prometheus:
    """A running Prometheus server started by this test session."""

    url: str
    proc: subprocess.Popen
    log: Path

    def api(self, path: str, **params: str) -> Any:
        """GET `/api/v1/<path>`; the `data` of a successful answer."""
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """Instant-query `expr`; the result vector (each item has `metric` and `value`)."""
        return self.api("query", query=expr)["result"]

    def scalar(self, expr: str) -> float | None:
        """The single value of `expr`, or None while it has no result."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr} has {len(result)} series, expected one"
        return float(result[0]["value"][1]) if result else None


@contextmanager
def prometheus(config: dict, timeout_s: float = 60) -> Iterator[Prometheus]:
    """Start /usr/bin/prometheus with `config` on a loopback port; yield it; stop it, remove its data."""
    binary = require_binary(PROMETHEUS)
    work = Path(tempfile.mkdtemp(prefix="medpo-prom-", dir="/tmp"))
    (work / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    log = work / "prometheus.log"
    cmd = [binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
           f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Prometheus(f"http://127.0.0.1:{port}", proc, log)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        wait_until("Prometheus to be ready", ready, timeout_s, interval_s=0.2)
        yield server
    finally:
        stop_tree(proc)
        shutil.rmtree(work, ignore_errors=True)
