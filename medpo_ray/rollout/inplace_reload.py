"""Weight reload by copy for a vLLM model served on CPU, ~3x faster than vLLM's layer-wise reload.

On CPU vLLM packs every Linear weight into a oneDNN (or sgl) kernel handle and leaves an empty
parameter behind, so `model.load_weights` alone has nowhere to copy to, and vLLM's `reload_weights`
rebuilds each layer from metadata, loads, re-packs and copies back (~40 ms per sync for the tiny model
whatever its size, of a ~0.4 s training step). Here each packed layer gets its full weight back once,
materialized from the metadata vLLM recorded at load time, with vLLM's own weight loader (it fuses
q/k/v and gate/up); a sync is then `model.load_weights` (copies into the parameters) plus vLLM's own
handle dispatch for each Linear that push wrote, and nothing else (a push that skips the frozen vision
tower leaves its kernels alone).

The worker extension (worker_ext.py) only uses it after loading a real push both ways showed that it
leaves every tensor exactly as vLLM's reload does; otherwise the worker keeps using `reload_weights`.
"""
from __future__ import annotations

from collections.abc import Iterable


class InplaceReloadUnavailable(Exception):
    """The served model has a layer this loader does not know how to refresh (it then is not used)."""


class InplaceReload:
    """Full weights restored on the packed layers of `model`; `load` copies a push into them."""

    def __init__(self, model):
        from vllm.model_executor.layers.linear import UnquantizedLinearMethod
        from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod
        from vllm.model_executor.model_loader.reload.layerwise import LAYERWISE_INFO, _get_original_loader
        from vllm.model_executor.model_loader.reload.meta import materialize_meta_tensor, restore_layer_refs
        from vllm.platforms import current_platform

        if not current_platform.is_cpu():
            raise InplaceReloadUnavailable("not a CPU platform")
        self.model = model
        self.packed = [m for m in model.modules() if hasattr(m, "cpu_linear")]
        self._emptied = {}  # module -> the empty parameter vLLM left, put back by `undo`
        self._wrapped = {}  # module -> its weight's own loader (wrapped to note writes), put back by `undo`
        self._always: list = []
        self._written: set = set()
        for m in self.packed:
            method = getattr(m, "quant_method", None)
            if not isinstance(method, (UnquantizedLinearMethod, UnquantizedEmbeddingMethod)):
                raise InplaceReloadUnavailable(f"{type(m).__name__} has quant method {type(method).__name__}")
            if m.weight.numel():  # kept its weight when packed: note writes through its own loader
                loader = getattr(m.weight, "weight_loader", None)
                if loader is None:
                    self._always.append(m)  # loaded by vLLM's default loader: re-dispatch on every push
                else:
                    self._wrapped[m] = loader
                    m.weight.weight_loader = self._noting(m, loader)
                continue
            info = LAYERWISE_INFO.get(m)
            meta = info.restore_metadata[0].get("weight") if info is not None else None
            if meta is None:
                raise InplaceReloadUnavailable(f"no load-time metadata for {type(m).__name__}.weight")
            full = materialize_meta_tensor(restore_layer_refs(meta, m))
            # The original loader (not the layer-wise buffering wrapper), noting that this layer was written.
            full.weight_loader = self._noting(m, _get_original_loader(full))
            self._emptied[m] = m.weight
            del m.weight
            m.register_parameter("weight", full)

    def _noting(self, module, loader):
        def load(*args, **kwargs):
            self._written.add(module)
            return loader(*args, **kwargs)
        return load

    def load(self, tensors: Iterable[tuple[str, object]]) -> int:
        """Copy checkpoint-format tensors into the model, then re-dispatch the packed layers whose weight
        was written (every load into a vLLM parameter goes through its `weight_loader`); their number."""
        import torch
        from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

        self._written = set()
        with torch.no_grad():
            self.model.load_weights(iter(tensors))
        written = [m for m in self.packed if m in self._written or m in self._always]
        for m in written:
            dispatch_cpu_unquantized_gemm(m, remove_weight=False)
        return len(written)

    def undo(self) -> None:
        """Give the packed layers their empty parameters back (vLLM's reload expects them)."""
        for m, empty in self._emptied.items():
            del m.weight
            m.register_parameter("weight", empty)
        for m, loader in self._wrapped.items():
            m.weight.weight_loader = loader
        self._emptied, self._wrapped = {}, {}


def snapshot(model) -> dict:
    """A copy of every non-empty parameter and buffer (what the worker's verification compares)."""
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    return {n: t.detach().clone() for n, t in tensors if t.numel()}


def differing(model, before: dict) -> list[str]:
    """Names whose values differ from the snapshot (bitwise)."""
    import torch

    now = dict(list(model.named_parameters()) + list(model.named_buffers()))
    return [n for n, t in before.items() if n not in now or not torch.equal(now[n].detach(), t)]
