"""Joining the learners' process group: the environment DeepSpeed reads, then its rendezvous."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class DistEnv:
    """Where this rank sits in the data-parallel group and how to reach rank 0."""

    rank: int
    world_size: int
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    local_rank: int = 0
    local_world_size: int = 1
    backend: str = "gloo"  # gloo on CPU, nccl on GPUs
    # "file://PATH": rendezvous through a file (every rank on one node), so no rank listens on a TCP port
    # for it (torch's TCPStore listens on every interface); None: MASTER_ADDR:MASTER_PORT over TCP.
    init_method: str | None = None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def init_distributed(env: DistEnv) -> None:
    """Export the rendezvous variables and join the process group (a no-op when already joined)."""
    import torch.distributed

    if torch.distributed.is_initialized():
        return
    os.environ.update(MASTER_ADDR=env.master_addr, MASTER_PORT=str(env.master_port), RANK=str(env.rank),
                      WORLD_SIZE=str(env.world_size), LOCAL_RANK=str(env.local_rank),
                      LOCAL_SIZE=str(env.local_world_size), LOCAL_WORLD_SIZE=str(env.local_world_size))
    import deepspeed

    if env.init_method:
        deepspeed.init_distributed(dist_backend=env.backend, auto_mpi_discovery=False, init_method=env.init_method,
                                   rank=env.rank, world_size=env.world_size)
    else:
        deepspeed.init_distributed(dist_backend=env.backend, auto_mpi_discovery=False)


def all_ranks_agree(flag: bool, device) -> bool:
    """True when `flag` is True on every rank (a collective: every rank must call it)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def barrier() -> None:
    """Wait until every rank gets here."""
    import torch.distributed as dist

    dist.barrier()
