"""What the policy trains and what the reference is: full fine-tuning (the reference is a frozen copy) or
LoRA on the language model only (the reference is the same model with its adapters disabled).

The vision tower and projector stay frozen unless a full fine-tune asks for `train_vision`, as the
paper trains (LoRA on the LLM only).
"""
from __future__ import annotations

import re

from medpo_ray.config import TrainConfig
from medpo_ray.errors import MedpoError

ADAPTER = "default"  # peft's name for the one adapter the learner trains
# Attribute paths of the language model in HF vision-language models (transformers 5: model.language_model
# in every supported family); the vision side's paths come from the family adapter (models/families.py).
_LANGUAGE_PATHS = ("model.language_model", "language_model")


def _resolve(model, path: str):
    obj = model
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def language_model_path(model) -> str:
    """Dotted module path of the language model inside a vision-language model."""
    for path in _LANGUAGE_PATHS:
        if _resolve(model, path) is not None:
            return path
    raise MedpoError(f"{type(model).__name__}: no language model found at {', '.join(_LANGUAGE_PATHS)}")


def vision_modules(model) -> list:
    """The vision tower and projector modules, at the paths the model's family names (one for the Qwen-VL
    families, whose merger sits inside `visual`)."""
    from medpo_ray.models.families import family_of

    paths = family_of(getattr(model.config, "model_type", None), where=type(model).__name__).vision_paths
    found = [m for m in (_resolve(model, p) for p in paths) if m is not None]
    if len(found) != len(paths):
        raise MedpoError(f"{type(model).__name__}: no vision module at {', '.join(paths)}")
    return found


def freeze_vision(model) -> None:
    """Turn off gradients of the vision tower and projector."""
    for module in vision_modules(model):
        module.requires_grad_(False)


def lora_target_regex(model, targets: list[str]) -> str:
    """A peft `target_modules` regex matching the target Linear names inside the language model only."""
    prefix = re.escape(language_model_path(model))
    names = "|".join(re.escape(t) for t in targets)
    return rf"^{prefix}\..*\.({names})$"


def prepare_policy(model, train: TrainConfig):
    """Freeze what does not train and, for LoRA, wrap the model in a peft model with one adapter."""
    if train.finetune == "full":
        if not train.train_vision:
            freeze_vision(model)
        return model
    from peft import LoraConfig, get_peft_model

    model.requires_grad_(False)
    cfg = LoraConfig(r=train.lora_r, lora_alpha=train.lora_alpha, lora_dropout=train.lora_dropout,
                     target_modules=lora_target_regex(model, train.lora_targets), bias="none")
    try:
        return get_peft_model(model, cfg, adapter_name=ADAPTER)
    except ValueError as e:  # peft: "Target modules ... not found in the base model"
        raise MedpoError(f"train.lora_targets {train.lora_targets}: no such layer in the language model ({e})") \
            from None


def is_lora(model) -> bool:
    """True when `model` is a peft model (LoRA mode)."""
    from peft import PeftModel

    return isinstance(model, PeftModel)
