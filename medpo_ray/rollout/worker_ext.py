"""vLLM worker extension (`LLM(worker_extension_cls=...)`): loads a weight push inside the worker.

Methods run in the vLLM worker through `llm.collective_rpc(name, args=...)`, with `self` the worker.
"""
from __future__ import annotations

import time

WORKER_EXTENSION = "medpo_ray.rollout.worker_ext.WeightSyncExtension"


class WeightSyncExtension:
    """Mixed into vLLM's worker class; one RPC applies a whole push."""

    def medpo_load_weights(self, transport: str, buckets: list) -> dict:
        """Decode every bucket, check values, then reload; returns {"error": ...} instead of raising.

        Everything that can fail on the data happens before `reload_weights`, so a refused push
        leaves the serving weights untouched. `reload_weights` (not `model.load_weights`) because on
        CPU vLLM prepacks Linear weights and leaves empty parameters behind; the layerwise reload
        re-materializes them, maps HF names (qkv / gate_up fusing) and prepacks again.
        """
        import torch

        from medpo_ray.rollout.weight_sync.object_store import load_bucket

        t0 = time.perf_counter()
        try:
            tensors = [item for b in buckets for item in load_bucket(b).items()]
        except Exception as e:  # corrupt bucket: the message goes back to the caller, nothing applied
            return {"error": f"cannot decode weight buckets ({transport}): {e}"}
        bad = [n for n, t in tensors if not bool(torch.isfinite(t).all())]
        if bad:
            return {"error": f"non-finite values in {len(bad)} tensor(s): {', '.join(bad[:4])}"}
        t1 = time.perf_counter()
        self.reload_weights(weights_iterator=tensors, is_checkpoint_format=True)
        return {"tensors": len(tensors), "decode_s": t1 - t0, "reload_s": time.perf_counter() - t1}
