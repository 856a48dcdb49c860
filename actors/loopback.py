"""Keep a local Ray cluster on loopback.

Ray decides at import time (ray_constants.ENABLE_RAY_CLUSTER, from RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER)
whether a node is meant for a cluster; if so it swaps a loopback node address for the machine's own and
its gRPC servers (GCS, raylet, every worker) and agents listen on all interfaces. A process that has
already imported Ray (the driver imports it before it reads the config) cannot fix that with the
environment alone: the variable goes to the processes Ray starts, and the constant is set in this one.
Measured on Ray 2.60 (`tests/integration/test_loopback.py` lists a run's listening sockets).
"""
from __future__ import annotations

import os

_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def loopback_only() -> None:
    """Make the local Ray cluster this process is about to start listen on 127.0.0.1 only."""
    os.environ[_VAR] = "0"  # read at import by the GCS, raylet, agents and workers
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # read when ray.init picks the node address, in this process
