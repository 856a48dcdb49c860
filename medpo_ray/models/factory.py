"""Build the embedded policy offline: a random-init Qwen2-VL (tokenizer, processor, chat template,
safetensors weights) that both transformers and vLLM load natively. Same inputs -> same bytes."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from medpo_ray.models.presets import ModelPreset, qwen2vl_config_kwargs
from medpo_ray.models.tokenizer import CHAT_TEMPLATE, special_ids, train_tokenizer

BUILD_INFO = "medpo_model.json"
# Random init gives logits of std ~0.02 * sqrt(hidden): nearly uniform sampling. A wider lm_head makes
# an untrained policy's outputs depend visibly on its weights, which the weight-sync tests rely on.
LM_HEAD_STD = 0.2


def build_processor(tokenizer, preset: ModelPreset):
    """Qwen2-VL processor with the preset's small pixel budget (112 px -> 16 image tokens)."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    kw = dict(min_pixels=preset.min_pixels, max_pixels=preset.max_pixels, patch_size=14,
              temporal_patch_size=2, merge_size=2)
    # transformers 5.19 refuses video_processor=None for Qwen2-VL, so a (never used) one is built too.
    return Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**kw), tokenizer=tokenizer,
                            video_processor=Qwen2VLVideoProcessor(**kw), chat_template=CHAT_TEMPLATE)


def build_model(out_dir: str | Path, preset: ModelPreset, texts: Sequence[str], seed: int = 0) -> dict:
    """Train the tokenizer on `texts`, init the model from `seed`, save everything under `out_dir`."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(texts, preset.vocab)
    ids = special_ids(tokenizer)
    vocab_size = -(-len(tokenizer) // 64) * 64  # embedding rows padded like real checkpoints
    config = Qwen2VLConfig(**qwen2vl_config_kwargs(preset, vocab_size, ids))
    config.dtype = "float32"  # saved in fp32; vLLM may still serve it in bf16
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG as it was
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(config)
        with torch.no_grad():
            model.lm_head.weight.normal_(0.0, LM_HEAD_STD)
    gen = model.generation_config
    gen.eos_token_id, gen.pad_token_id, gen.bos_token_id = ids["<|im_end|>"], ids["<|endoftext|>"], None
    gen.do_sample = False
    model.save_pretrained(out, safe_serialization=True)
    build_processor(tokenizer, preset).save_pretrained(out)
    corpus_sha = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    info = {"preset": preset.name, "seed": seed, "parameters": sum(p.numel() for p in model.parameters()),
            "tokenizer_size": len(tokenizer), "vocab_size": vocab_size, "corpus_texts": len(texts),
            "corpus_sha256": corpus_sha}
    (out / BUILD_INFO).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return info


def resolve_model_dir(model_cfg) -> Path:
    """The policy directory a `ModelConfig` names: its `path`, or its preset built once (cached)."""
    from medpo_ray.models.corpus import grammar_texts
    from medpo_ray.models.loading import check_model_dir
    from medpo_ray.models.presets import get_preset

    if model_cfg.path:
        return check_model_dir(model_cfg.path)
    out = Path(model_cfg.build_dir) / f"{model_cfg.preset}-seed{model_cfg.seed}"
    if not (out / BUILD_INFO).is_file():  # written last, so its presence means a complete build
        build_model(out, get_preset(model_cfg.preset), grammar_texts(), seed=model_cfg.seed)
    return out
