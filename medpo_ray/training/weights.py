"""Full, HF-named tensors out of a (possibly ZeRO-3 sharded, possibly LoRA) policy, and back in.

Under ZeRO-3 each rank holds a shard of every parameter: gathering is a collective, so every rank must
call these functions together even when only rank 0 keeps the result. Parameters are gathered one
module at a time, never the whole model at once.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from medpo_ray.training.finetune import ADAPTER

_PEFT_PREFIX = "base_model.model."


def _gathered(params: list, zero3: bool, modifier_rank: int | None = None):
    if not zero3 or not params:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank)


def _persistent_buffers(module) -> Iterator[tuple[str, torch.Tensor]]:
    for name, buf in module.named_buffers(recurse=False):
        if buf is not None and name not in module._non_persistent_buffers_set:
            yield name, buf


def full_state_dict(module, zero3: bool, keep: bool = True, trainable_only: bool = False,
                    views: bool = False, skip: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """Every parameter and persistent buffer (or only the trainable parameters) under its module name,
    as full CPU copies. `keep=False` joins the gathers without copying (ranks that discard the result).
    `views=True` (not under ZeRO-3, whose gathered tensors are freed after each module) returns the
    live CPU tensors themselves, for a caller that copies them at once (a weight-sync pack). Names in
    `skip` are neither gathered nor copied (every rank must give the same set under ZeRO-3).
    """
    if views and not zero3:
        return {n: t.detach() for n, t in _named_state(module, trainable_only) if n not in skip} if keep else {}
    out: dict[str, torch.Tensor] = {}
    for mod_name, mod in module.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        params = [(n, p) for n, p in mod.named_parameters(recurse=False)
                  if (p.requires_grad or not trainable_only) and prefix + n not in skip]
        buffers = [] if trainable_only else [(n, b) for n, b in _persistent_buffers(mod) if prefix + n not in skip]
        with _gathered([p for _, p in params], zero3):
            if keep:
                for name, t in [*params, *buffers]:
                    out[prefix + name] = t.detach().to("cpu", copy=True)
    return out


def _named_state(module, trainable_only: bool) -> Iterator[tuple[str, torch.Tensor]]:
    for mod_name, mod in module.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for name, p in mod.named_parameters(recurse=False):
            if p.requires_grad or not trainable_only:
                yield prefix + name, p
        if not trainable_only:
            for name, b in _persistent_buffers(mod):
                yield prefix + name, b


def merged_state_dict(module, zero3: bool, keep: bool = True, skip: frozenset[str] = frozenset()
                      ) -> dict[str, torch.Tensor]:
    """The weights the rollout engine serves: base names, LoRA deltas merged in (W + B·A·scale).

    The live model is not modified (merging in place and unmerging would not give W back exactly). Names
    in `skip` (tensors training never changes) are neither gathered nor copied.
    """
    from peft.tuners.lora import LoraLayer

    out: dict[str, torch.Tensor] = {}
    lora_paths = [n for n, m in module.named_modules() if isinstance(m, LoraLayer)]
    for mod_name, mod in module.named_modules():
        if any(mod_name.startswith(p + ".") for p in lora_paths):
            continue  # the adapter's own submodules: folded into their LoraLayer below
        base = mod_name.removeprefix(_PEFT_PREFIX.rstrip(".")).removeprefix(".")
        prefix = f"{base}." if base else ""
        if isinstance(mod, LoraLayer):
            with _gathered(list(mod.parameters()), zero3):
                if keep:
                    layer = mod.get_base_layer()
                    weight = layer.weight.detach() + mod.get_delta_weight(ADAPTER).detach()
                    out[prefix + "weight"] = weight.to("cpu", copy=True)
                    if layer.bias is not None and prefix + "bias" not in skip:
                        out[prefix + "bias"] = layer.bias.detach().to("cpu", copy=True)
            continue
        params = [(n, p) for n, p in mod.named_parameters(recurse=False) if prefix + n not in skip]
        with _gathered([p for _, p in params], zero3):
            if keep:
                for name, t in [*params, *_persistent_buffers(mod)]:
                    if prefix + name not in skip:
                        out[prefix + name] = t.detach().to("cpu", copy=True)
    return out


def frozen_names(module) -> frozenset[str]:
    """Names, as the export functions above write them, of the tensors training never changes: parameters
    that do not require grad (the frozen vision tower) and persistent buffers. Under LoRA a base Linear's
    exported weight carries its adapter's delta, so only the weights of LoRA-wrapped layers change."""
    from peft.tuners.lora import LoraLayer

    lora_paths = [n for n, m in module.named_modules() if isinstance(m, LoraLayer)]
    frozen = set()
    for mod_name, mod in module.named_modules():
        if any(mod_name.startswith(p + ".") for p in lora_paths):
            continue
        base = mod_name.removeprefix(_PEFT_PREFIX.rstrip(".")).removeprefix(".") if lora_paths else mod_name
        prefix = f"{base}." if base else ""
        if isinstance(mod, LoraLayer):
            layer = mod.get_base_layer()
            if layer.bias is not None and not layer.bias.requires_grad:
                frozen.add(prefix + "bias")
            continue
        frozen.update(prefix + n for n, p in mod.named_parameters(recurse=False) if not p.requires_grad)
        frozen.update(prefix + n for n, _ in _persistent_buffers(mod))
    return frozenset(frozen)


def load_into(module, tensors: dict[str, torch.Tensor], zero3: bool, names: list[str] | None = None) -> list[str]:
    """Copy `tensors` (module-named, full shapes) into the module's parameters; the names not found.

    Under ZeRO-3 only rank 0 needs real `tensors` (the others may pass {}): its values are broadcast.
    """
    missing = []
    wanted = set(names) if names is not None else None
    for mod_name, mod in module.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        params = [(prefix + n, p) for n, p in mod.named_parameters(recurse=False)
                  if wanted is None or prefix + n in wanted]
        with _gathered([p for _, p in params], zero3, modifier_rank=0), torch.no_grad():
            for full, p in params:
                if full in tensors:
                    p.copy_(tensors[full].to(p.dtype))
                elif not zero3 or tensors:
                    missing.append(full)
    return missing
