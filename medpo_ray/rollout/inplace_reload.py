"""Weight reload by copy for a vLLM model served on CPU, ~3x faster than vLLM's layer-wise reload.

On CPU vLLM packs every Linear weight into a oneDNN (or sgl) kernel handle and leaves an empty
parameter behind, so `model.load_weights` alone has nowhere to copy to, and vLLM's `reload_weights`
rebuilds each layer from metadata, loads, re-packs and copies back (~40 ms per sync for the tiny model
whatever its size, of a ~0.4 s training step). Here each packed layer gets its full weight back once,
materialized from the metadata vLLM recorded at load time, with vLLM's own weight loader (it fuses
q/k/v and gate/up); a sync is then the weight-loader calls `model.load_weights` makes (copies into the
parameters; recorded on the first load and made directly afterwards, see `_record`) plus vLLM's own
handle dispatch for each Linear that push wrote, and nothing else (a push that skips the frozen vision
tower leaves its kernels alone).

Layers whose weight is under 1 MiB are served by vLLM's own torch-linear fallback on the restored weight
instead of a packed kernel: a push then lands directly in the weight the matmul reads, with no re-pack
(~0.5 ms per layer per sync, half of a tiny model's load). vLLM itself keeps weights of 1 MiB or less
off oneDNN where it has another kernel (sgl for bf16/fp16: too small to gain from it). Measured here,
fp32 decode: tiny model (every layer < 1 MiB) 7% faster unpacked; the 30M `small` model (layers 1-7
MiB) 1.45x faster packed, so big layers stay packed.

The worker extension (worker_ext.py) only uses it after loading a real push both ways showed that it
leaves every tensor exactly as vLLM's reload does; otherwise the worker keeps using `reload_weights`.
"""
from __future__ import annotations

from collections.abc import Iterable

UNPACKED_MAX_BYTES = 1 << 20  # layers below this are served unpacked (torch linear), see above


class InplaceReloadUnavailable(Exception):
    """The served model has a layer this loader does not know how to refresh (it then is not used)."""


class InplaceReload:
    """Full weights restored on the packed layers of `model`; `load` copies a push into them."""

    def __init__(self, model, unpacked_max_bytes: int = UNPACKED_MAX_BYTES):
        import torch
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
        self._plan: dict | None = None  # name -> its recorded loader call (None: via model.load_weights)
        self._kernels = {}  # module -> its packed kernel, for the layers now served unpacked (put back by `undo`)
        for m in self.packed:
            if m.weight.numel() * m.weight.element_size() < unpacked_max_bytes and m.weight.ndim == 2:
                self._kernels[m] = m.cpu_linear
                m.cpu_linear = torch.nn.functional.linear

    def _noting(self, module, loader):
        def load(*args, **kwargs):
            self._written.add(module)
            return loader(*args, **kwargs)
        return load

    def load(self, tensors: Iterable[tuple[str, object]]) -> int:
        """Copy checkpoint-format tensors into the model, then re-pack the packed layers whose weight was
        written (every load into a vLLM parameter goes through its `weight_loader`); their number."""
        import torch
        from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

        self._written = set()
        with torch.no_grad():
            if self._plan is None:
                self._plan = self._record(tensors)
            else:
                self._replay(tensors)
        written = [m for m in self.packed if (m in self._written or m in self._always) and m not in self._kernels]
        for m in written:
            dispatch_cpu_unquantized_gemm(m, remove_weight=False)
        return len(written)

    def _record(self, tensors: Iterable[tuple[str, object]]) -> dict:
        """Load tensor by tensor through `model.load_weights`, noting the one weight-loader call each
        becomes: later loads make those calls directly, without vLLM's walk of the model's modules and
        name mappings for every name (~half of a tiny model's load). A name whose load is not exactly one
        call on the tensor itself (split, transformed, loaded without a loader) keeps `load_weights`."""
        calls: list[tuple] = []

        def spy(loader):
            def load(param, weight, *args, **kwargs):
                calls.append((loader, param, weight, args, kwargs))
                return loader(param, weight, *args, **kwargs)
            return load

        # Only parameters with a loader of their own: giving one to the others would change which call
        # vLLM makes (it passes extra arguments to a parameter's own loader).
        own = [(p, _own_loader(p)) for p in dict.fromkeys(p for _, p in self.model.named_parameters())]
        own = [(p, loader) for p, loader in own if loader is not None]
        for p, loader in own:
            p.weight_loader = spy(loader)
        plan = {}
        try:
            for name, tensor in tensors:
                calls.clear()
                self.model.load_weights(iter([(name, tensor)]))
                one = len(calls) == 1 and calls[0][2] is tensor
                plan[name] = (calls[0][0], calls[0][1], calls[0][3], calls[0][4]) if one else None
        finally:
            for p, loader in own:
                p.weight_loader = loader
        return plan

    def _replay(self, tensors: Iterable[tuple[str, object]]) -> None:
        rest = []
        for name, tensor in tensors:
            call = self._plan.get(name)
            if call is None:
                rest.append((name, tensor))
                continue
            loader, param, args, kwargs = call
            loader(param, tensor, *args, **kwargs)
        if rest:
            self.model.load_weights(iter(rest))

    def undo(self) -> None:
        """Give the packed layers their empty parameters back (vLLM's reload expects them)."""
        for m, empty in self._emptied.items():
            del m.weight
            m.register_parameter("weight", empty)
        for m, loader in self._wrapped.items():
            m.weight.weight_loader = loader
        for m, kernel in self._kernels.items():
            m.cpu_linear = kernel
        self._emptied, self._wrapped, self._kernels = {}, {}, {}


def _own_loader(param):
    # An attribute (plain parameters) or a property (vLLM's parameter classes); None if it has neither.
    try:
        return getattr(param, "weight_loader", None)
    except Exception:  # vLLM's parameters raise once their loader was deleted
        return None


def snapshot(model) -> dict:
    """A copy of every non-empty parameter and buffer (what the worker's verification compares)."""
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    return {n: t.detach().clone() for n, t in tensors if t.numel()}


def differing(model, before: dict) -> list[str]:
    """Names whose values differ from the snapshot (bitwise)."""
    import torch

    now = dict(list(model.named_parameters()) + list(model.named_buffers()))
    return [n for n, t in before.items() if n not in now or not torch.equal(now[n].detach(), t)]
