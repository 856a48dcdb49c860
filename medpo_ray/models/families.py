"""Vision-language model families medpo-ray trains, one small adapter each, chosen from config.json.

An adapter says what differs between families and nothing else: the `model_type` values it covers, where
its vision tower and projector sit (frozen by default), where the SFT auxiliary lesion head can read one
feature row per image cell, and how `medpo-ray model tiny --family F` builds a random-init member of the
family offline (config, tokenizer, processor, chat template) that transformers and vLLM load as they load
a hub directory of that family. What is the same for all (the image placeholder token, the processor's
image tensors, `mm_token_type_ids` where the processor declares it) is read from the processor itself.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from medpo_ray.errors import MedpoError
from medpo_ray.models.presets import ModelPreset, qwen2vl_config_kwargs


class UnsupportedModelError(MedpoError):
    """config.json names an architecture no adapter covers; the message lists the supported ones."""


@dataclass(frozen=True)
class Family:
    """What medpo-ray needs to know about one family of vision-language models."""

    name: str
    model_types: tuple[str, ...]  # config.json `model_type` values
    vision_paths: tuple[str, ...]  # dotted module paths of the vision tower and projector (transformers 5)
    # Module whose output holds one feature row per merged image cell in raster order (the SFT lesion head's
    # input); None: the family's tower reorders or pools cells, so the auxiliary loss is not offered.
    aux_path: str | None
    example: str  # a hub model of the family, for messages and the README
    build: Callable[[ModelPreset, object, dict], tuple[object, object]] | None = None  # tiny (config, processor)
    # (old, new) name prefixes between transformers 5's module names and what vLLM 0.32 loads, where they
    # differ: applied to every pushed tensor name inside the engine (rollout/worker_ext.py).
    vllm_prefixes: tuple[tuple[str, str], ...] = ()
    # (old, new) prefixes from transformers 5's saved names to the hub layout (tiny builds only), so that a
    # tiny directory is laid out as the family's hub checkpoints are.
    hub_prefixes: tuple[tuple[str, str], ...] = ()


def rename(name: str, prefixes: tuple[tuple[str, str], ...] | list) -> str:
    """`name` with the first matching (old, new) prefix replaced; a name already under `new` is kept."""
    for old, new in prefixes:
        if name.startswith(old) and not name.startswith(new):
            return new + name[len(old):]
    return name


def _qwen_processor(cls_name: str, tokenizer, preset: ModelPreset, patch: int):
    import transformers
    from transformers import Qwen2VLImageProcessor

    from medpo_ray.models.tokenizer import CHAT_TEMPLATE

    kw = dict(min_pixels=preset.min_pixels, max_pixels=preset.max_pixels, patch_size=patch,
              temporal_patch_size=2, merge_size=2)
    video_cls = {"Qwen3VLProcessor": "Qwen3VLVideoProcessor"}.get(cls_name, "Qwen2VLVideoProcessor")
    # transformers 5.19 refuses video_processor=None for the Qwen processors: a (never used) one is built too.
    return getattr(transformers, cls_name)(image_processor=Qwen2VLImageProcessor(**kw), tokenizer=tokenizer,
                                           video_processor=getattr(transformers, video_cls)(**kw),
                                           chat_template=CHAT_TEMPLATE)


def _build_qwen2_vl(preset: ModelPreset, tokenizer, ids: dict):
    from transformers import Qwen2VLConfig

    return (Qwen2VLConfig(**qwen2vl_config_kwargs(preset, ids["vocab_size"], ids)),
            _qwen_processor("Qwen2VLProcessor", tokenizer, preset, 14))


def _build_qwen2_5_vl(preset: ModelPreset, tokenizer, ids: dict):
    from transformers import Qwen2_5_VLConfig

    kw = qwen2vl_config_kwargs(preset, ids["vocab_size"], ids)
    # Qwen2.5-VL's tower: SwiGLU blocks with window attention except the listed full-attention blocks,
    # and a merger projecting to the text width (out_hidden_size).
    kw["vision_config"] = dict(depth=preset.vision_depth, hidden_size=preset.vision_embed,
                               intermediate_size=2 * preset.vision_embed, num_heads=preset.vision_heads,
                               out_hidden_size=preset.hidden, fullatt_block_indexes=[preset.vision_depth - 1],
                               window_size=112, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                               hidden_act="silu", in_channels=3)
    return Qwen2_5_VLConfig(**kw), _qwen_processor("Qwen2_5_VLProcessor", tokenizer, preset, 14)


def _build_qwen3_vl(preset: ModelPreset, tokenizer, ids: dict):
    from transformers import Qwen3VLConfig

    kw = qwen2vl_config_kwargs(preset, ids["vocab_size"], ids)
    text = kw["text_config"]
    text.update(head_dim=preset.head_dim, attention_bias=False)
    text["rope_parameters"] = {**text["rope_parameters"], "mrope_interleaved": True}
    # Qwen3-VL's tower: 16-px patches, learned position embeddings on a square grid, and "deepstack"
    # features of some blocks added into the first text layers.
    kw["vision_config"] = dict(depth=preset.vision_depth, hidden_size=preset.vision_embed,
                               intermediate_size=2 * preset.vision_embed, num_heads=preset.vision_heads,
                               out_hidden_size=preset.hidden, patch_size=16, spatial_merge_size=2,
                               temporal_patch_size=2, num_position_embeddings=64,
                               deepstack_visual_indexes=[0], hidden_act="gelu_pytorch_tanh", in_channels=3)
    return Qwen3VLConfig(**kw), _qwen_processor("Qwen3VLProcessor", tokenizer, preset, 16)


def _build_llava(preset: ModelPreset, tokenizer, ids: dict):
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaProcessor

    from medpo_ray.models.tokenizer import LLAVA_CHAT_TEMPLATE

    side = int(preset.max_pixels ** 0.5)  # 112 px -> 8 x 8 patches of 14 px -> 64 image tokens
    text = dict(model_type="mistral", vocab_size=ids["vocab_size"], hidden_size=preset.hidden,
                intermediate_size=preset.intermediate, num_hidden_layers=preset.layers,
                num_attention_heads=preset.heads, num_key_value_heads=preset.kv_heads,
                max_position_embeddings=preset.max_position, rms_norm_eps=1e-6, sliding_window=None,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"], tie_word_embeddings=False)
    vision = dict(model_type="clip_vision_model", hidden_size=preset.vision_embed,
                  intermediate_size=2 * preset.vision_embed, num_hidden_layers=preset.vision_depth,
                  num_attention_heads=preset.vision_heads, image_size=side, patch_size=14,
                  projection_dim=preset.vision_embed, hidden_act="quick_gelu")
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=ids["image"],
                         vision_feature_layer=-1, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu", tie_word_embeddings=False)
    image_processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                                         do_center_crop=True)
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_CHAT_TEMPLATE, image_token="<image>")
    return config, processor


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("qwen2_vl", ("qwen2_vl",), ("model.visual",), "model.visual.merger", "Qwen/Qwen2-VL-2B-Instruct",
           _build_qwen2_vl),
    # The merger of Qwen2.5-VL emits cells in window order (the tower restores raster order after it).
    Family("qwen2_5_vl", ("qwen2_5_vl",), ("model.visual",), None,
           "FreedomIntelligence/HuatuoGPT-Vision-7B-Qwen2.5VL", _build_qwen2_5_vl),
    Family("qwen3_vl", ("qwen3_vl",), ("model.visual",), "model.visual.merger", "Qwen/Qwen3-VL-4B-Instruct",
           _build_qwen3_vl),
    # transformers 5 flattened CLIPVisionModel (no `vision_model` level); hub checkpoints and vLLM keep it.
    Family("llava", ("llava",), ("model.vision_tower", "model.multi_modal_projector"), None,
           "llava-hf/llava-1.5-7b-hf (LLaVA-Med v1.5 in llava-hf layout)", _build_llava,
           vllm_prefixes=(("model.vision_tower.", "model.vision_tower.vision_model."),),
           hub_prefixes=(("vision_tower.", "vision_tower.vision_model."),)),
)}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(t for f in FAMILIES.values() for t in f.model_types)


def family_of(model_type: str | None, where: str = "config.json") -> Family:
    """The adapter for a config's `model_type`, or UnsupportedModelError naming it and the supported list."""
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    raise UnsupportedModelError(f"{where}: model_type {model_type!r} is not supported; medpo-ray trains "
                                + ", ".join(f"{f.name} (e.g. {f.example})" for f in FAMILIES.values()))


def get_family(name: str) -> Family:
    """The adapter called `name` (the `--family` of `medpo-ray model tiny`)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnsupportedModelError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}") from None
