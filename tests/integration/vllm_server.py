"""A real vLLM OpenAI-compatible server on loopback for the critic and judge tests: structured output on
(xgrammar), an API key required, the log kept for the failure message."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.integration.promstack import free_port

STARTUP_S = 300


@contextlib.contextmanager
def serve(model: Path, log_dir: Path, key: str, name: str = "tiny") -> Iterator[str]:
    """The base URL (…/v1) of a server of `model` while the block runs."""
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    log = log_path.open("w")
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
         "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
         "--max-model-len", "4096", "--enforce-eager", "--api-key", key,
         "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}'],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, f"vLLM server not healthy after {STARTUP_S} s"
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)  # the server offers no readiness event to wait on
        yield base + "/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
