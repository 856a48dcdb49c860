"""A run's Ray session listens on loopback only: every TCP socket that `medpo-ray train` and the processes
it starts (GCS, raylet, agents, every actor's worker) listen on, polled through the whole run."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def _listening(pid: int) -> set[tuple[str, int, str]]:
    found = set()
    try:
        tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for p in tree:
        try:
            found |= {(c.laddr.ip, c.laddr.port, p.name()) for c in p.net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_every_listener_of_a_training_run_is_on_loopback(pipeline_setup):
    config = pipeline_setup.write("loopback", train={"steps": 2, "checkpoint_every": 2}, guard={"every": 0})
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    proc = subprocess.Popen([sys.executable, "-m", "driver.cli", "train", "--config", str(config)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: set[tuple[str, int, str]] = set()
    try:
        while proc.poll() is None:
            seen |= _listening(proc.pid)
            time.sleep(1.0)
        out = proc.stdout.read()
    finally:
        proc.kill()
    assert proc.returncode == 0, out[-2000:]
    names = {n for _, _, n in seen}
    # The run's own Ray processes were there to be looked at ...
    assert {"gcs_server", "raylet"} <= names and any(n.startswith("ray::") for n in names), names
    # ... and none of them listened beyond loopback (before the fix: "::", "0.0.0.0" and the host's address).
    assert {(a, n) for a, _, n in seen if a not in LOOPBACK} == set()
