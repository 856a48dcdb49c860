"""GPU weight sync through vLLM's public NCCL weight-transfer API (no private vLLM internals).

Flow (vLLM >= 0.33 names; docs: "weight transfer" in vLLM's RL guide):
1. Each rollout engine is created with `weight_transfer_config={"backend": "nccl"}` (ENGINE_KWARGS;
   `RolloutEngine(..., weight_transfer="nccl")`).
2. The learner's rank 0 builds `NcclWeightSync(target, master_address, master_port, engine_workers)`:
   vLLM's `WeightTransferTrainerFactory.trainer_init` opens rank 0 of a fresh NCCL group while the
   engines' workers join it through `target.init_weight_transfer_engine` (ranks 1..engine_workers;
   `actors.rollout.RolloutGroup` gives each engine its own rank offset).
3. `sync(named_tensors, version)` checks names and shapes against the engines' manifest first (a
   refused push never reaches NCCL, where a mismatch would hang or load garbage), then
   `send_weights()`: start_weight_update -> update_weights (names/dtypes/shapes) concurrently with a
   packed broadcast of the tensors -> finish_weight_update, on which each engine resets its prefix
   and encoder caches and serves `version`.
Non-sender learner ranks do not call this; with ZeRO-3 they must still join the gather that
materializes full tensors before rank 0 sends. Tested only on a GPU machine.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import torch
from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource

from medpo_ray.rollout.weight_sync.base import WeightSync

ENGINE_KWARGS = {"weight_transfer_config": {"backend": "nccl"}}
_ST_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def tensor_header(items: list[tuple[str, torch.Tensor]]) -> dict:
    """name -> (safetensors dtype name, shape), the form `WeightManifest.check` reads."""
    return {n: (_ST_DTYPES.get(t.dtype, str(t.dtype)), tuple(t.shape)) for n, t in items}


class TensorListSource(WeightSource):
    """A vLLM `WeightSource` over the (name, tensor) list of the current sync."""

    def __init__(self) -> None:
        self.items: list[tuple[str, torch.Tensor]] = []

    def metadata(self) -> list[ParamMeta]:
        """What iteration will yield, in order."""
        return [ParamMeta(n, t.dtype, tuple(t.shape)) for n, t in self.items]

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        return iter(self.items)


class _VersionedClient:
    """vLLM's trainer engine calls finish_weight_update() without a version; this one passes it on."""

    def __init__(self, target) -> None:
        self.target = target
        self.version: int | None = None

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        self.target.init_weight_transfer_engine(init_info)

    def start_weight_update(self) -> None:
        self.target.start_weight_update()

    def update_weights(self, update_info: dict) -> None:
        self.target.update_weights(update_info)

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self.target.finish_weight_update(str(self.version) if self.version is not None else weight_version)


class NcclWeightSync(WeightSync):
    """Learner rank 0 -> every engine worker, by NCCL broadcast in packed buckets."""

    def __init__(self, target, master_address: str, master_port: int, engine_workers: int,
                 packed: bool = True):
        from vllm.distributed.weight_transfer import WeightTransferTrainerFactory
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

        self.target = target
        self.manifest = target.weight_manifest()
        self.source = TensorListSource()
        self.client = _VersionedClient(target)
        info = NCCLTrainerInitInfo(master_address=master_address, master_port=master_port,
                                   world_size=1 + engine_workers, packed=packed, rank=0)
        self.trainer = WeightTransferTrainerFactory.trainer_init(info, client=self.client, source=self.source)

    def sync(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> dict:
        """Check, then broadcast the tensors and make every engine serve them as `version`."""
        t0 = time.perf_counter()
        items = [(n, t.detach().contiguous()) for n, t in named_tensors]
        self.manifest.check(tensor_header(items))
        self.source.items, self.client.version = items, version
        try:
            self.trainer.send_weights()
        finally:
            self.source.items = []
        return {"policy_version": version, "tensors": len(items),
                "bytes": sum(t.numel() * t.element_size() for _, t in items),
                "sync_s": time.perf_counter() - t0}

    def close(self) -> None:
        """Tear down the NCCL group on both sides."""
        self.trainer.shutdown()
        self.target.shutdown_weight_transfer_engine()
