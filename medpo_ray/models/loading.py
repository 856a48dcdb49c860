"""Open a policy directory (the embedded tiny model or any HF vision-language model) with clear errors."""
from __future__ import annotations

import json
from pathlib import Path

from medpo_ray.errors import MedpoError
from medpo_ray.models.families import UnsupportedModelError, family_of

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
# Config keys that name tokens only the processor may place (Qwen2-VL / Qwen2.5-VL / LLaVA names).
_VISION_ID_KEYS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id",
                   "vision_token_id", "image_token_index", "video_token_index")


class ModelDirError(MedpoError):
    """A model directory that is missing, incomplete or unreadable; the message names what is wrong."""



def check_model_dir(path: str | Path) -> Path:
    """The directory as a Path, after checking it holds config, weights, tokenizer and processor files."""
    root = Path(path)
    if not root.is_dir():
        raise ModelDirError(f"model directory {str(root)!r} does not exist (build one with "
                            f"`medpo-ray model tiny --out DIR` or set model.path to an HF model directory)")
    missing = []
    if not (root / "config.json").is_file():
        missing.append("config.json")
    if not any(root.glob("*.safetensors")):
        missing.append("*.safetensors weights")
    if not any((root / f).is_file() for f in _TOKENIZER_FILES):
        missing.append("tokenizer (" + " or ".join(_TOKENIZER_FILES) + ")")
    if not any((root / f).is_file() for f in _PROCESSOR_FILES):
        missing.append("processor (" + " or ".join(_PROCESSOR_FILES) + ")")
    if missing:
        raise ModelDirError(f"model directory {str(root)!r} is missing: {', '.join(missing)}")
    try:
        model_type = json.loads((root / "config.json").read_text()).get("model_type")
    except (OSError, json.JSONDecodeError, AttributeError) as e:
        raise ModelDirError(f"{root / 'config.json'}: not a readable JSON object: {e}") from None
    try:  # found here, before any actor starts: inside the actors it would surface as an error per stage
        family_of(model_type, where=f"model directory {str(root)!r}")
    except UnsupportedModelError as e:
        raise ModelDirError(str(e)) from None
    return root


def read_config(path: str | Path) -> dict:
    """config.json of a model directory as a dict."""
    root = check_model_dir(path)
    try:
        return json.loads((root / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelDirError(f"{root / 'config.json'}: not readable JSON: {e}") from None


def checkpoint_manifest(path: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype, shape) of every tensor in the directory's safetensors files (headers only)."""
    from safetensors import safe_open

    manifest: dict[str, tuple[str, tuple[int, ...]]] = {}
    for file in sorted(check_model_dir(path).glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():
                    sl = f.get_slice(name)
                    manifest[name] = (sl.get_dtype(), tuple(sl.get_shape()))
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise ModelDirError(f"{file}: unreadable safetensors file: {e}") from None
    return manifest


def vision_token_ids(path: str | Path) -> set[int]:
    """Ids of the image/video placeholder and delimiter tokens the model's config declares."""
    cfg = read_config(path)
    return {int(cfg[k]) for k in _VISION_ID_KEYS if isinstance(cfg.get(k), int)}


def load_processor(path: str | Path):
    """The directory's HF processor (tokenizer + image processor + chat template)."""
    from transformers import AutoProcessor

    root = check_model_dir(path)
    try:
        return AutoProcessor.from_pretrained(str(root))
    except (OSError, ValueError, KeyError) as e:
        raise ModelDirError(f"{root}: processor does not load: {e}") from None


def load_policy(path: str | Path, dtype: str = "float32"):
    """The directory's vision-language model in transformers, in eval mode on CPU."""
    import torch
    from transformers import AutoModelForImageTextToText

    root = check_model_dir(path)
    try:
        model = AutoModelForImageTextToText.from_pretrained(str(root), dtype=getattr(torch, dtype))
    except (OSError, ValueError, KeyError) as e:
        raise ModelDirError(f"{root}: model does not load in transformers: {e}") from None
    return model.eval()


def parameter_layouts(path: str | Path) -> dict[str, dict[str, tuple[int, ...]]]:
    """Tensor name -> shape, as saved in the checkpoint files and as named by the live HF module.

    A learner pushes `named_parameters()` (module names) while a checkpoint may use legacy names;
    the module layout is read from a model built on the meta device, so no weights are allocated.
    """
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    root = check_model_dir(path)
    layouts = {"checkpoint": {n: shape for n, (_, shape) in checkpoint_manifest(root).items()}}
    try:
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(str(root)))
    except (OSError, ValueError, KeyError) as e:
        raise ModelDirError(f"{root}: config does not build a vision-language model: {e}") from None
    layouts["module"] = {n: tuple(p.shape) for n, p in model.named_parameters()}
    return layouts
