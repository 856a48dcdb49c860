"""Weight sync from learner to rollout engines: one interface (`base.WeightSync`), one module per
transport: `object_store` (CPU: one flat buffer, or safetensors buckets by bytes or shared memory) and `nccl` (GPU)."""
from __future__ import annotations

from medpo_ray.rollout.weight_sync.base import WeightSync


def make_weight_sync(transport: str, target, **kwargs) -> WeightSync:
    """The transport for a topology: "flat" / "bytes" / "shm" on CPU, "nccl" between GPUs."""
    if transport in ("flat", "bytes", "shm"):
        from medpo_ray.rollout.weight_sync.object_store import ObjectStoreSync
        return ObjectStoreSync(target, transport=transport, **kwargs)
    if transport == "nccl":
        from medpo_ray.rollout.weight_sync.nccl import NcclWeightSync
        return NcclWeightSync(target, **kwargs)
    raise ValueError(f"unknown weight-sync transport {transport!r}; use flat, bytes, shm or nccl")
