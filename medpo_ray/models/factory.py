"""Build the embedded policy offline: a random-init vision-language model of a supported family (tokenizer,
processor, chat template, safetensors weights) that both transformers and vLLM load natively, as they load a
hub directory of that family. Same inputs -> same bytes."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from medpo_ray.models.families import get_family, rename
from medpo_ray.models.presets import ModelPreset
from medpo_ray.models.tokenizer import special_ids, train_tokenizer

BUILD_INFO = "medpo_model.json"
# Random init gives logits of std ~0.02 * sqrt(hidden): nearly uniform sampling. A wider lm_head makes
# an untrained policy's outputs depend visibly on its weights, which the weight-sync tests rely on.
LM_HEAD_STD = 0.2


def build_model(out_dir: str | Path, preset: ModelPreset, texts: Sequence[str], seed: int = 0,
                family: str = "qwen2_vl") -> dict:
    """Train the tokenizer on `texts`, init a model of `family` from `seed`, save everything under `out_dir`."""
    import torch
    from transformers import AutoModelForImageTextToText

    fam = get_family(family)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(texts, preset.vocab, style="llava" if fam.name == "llava" else "qwen")
    vocab_size = -(-len(tokenizer) // 64) * 64  # embedding rows padded like real checkpoints
    ids = {**special_ids(tokenizer), "vocab_size": vocab_size, "eos": tokenizer.eos_token_id,
           "pad": tokenizer.pad_token_id, "bos": tokenizer.bos_token_id,
           "image": tokenizer.convert_tokens_to_ids(tokenizer.image_token)}
    config, processor = fam.build(preset, tokenizer, ids)
    config.dtype = "float32"  # saved in fp32; vLLM may still serve it in bf16
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG as it was
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config)
        with torch.no_grad():
            model.lm_head.weight.normal_(0.0, LM_HEAD_STD)
    gen = model.generation_config
    gen.eos_token_id, gen.pad_token_id, gen.bos_token_id = ids["eos"], ids["pad"], None
    gen.do_sample = False
    model.save_pretrained(out, safe_serialization=True)
    if fam.hub_prefixes:
        _to_hub_layout(out, fam.hub_prefixes)
    processor.save_pretrained(out)
    corpus_sha = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    info = {"preset": preset.name, "family": fam.name, "seed": seed,
            "parameters": sum(p.numel() for p in model.parameters()),
            "tokenizer_size": len(tokenizer), "vocab_size": vocab_size, "corpus_texts": len(texts),
            "corpus_sha256": corpus_sha}
    (out / BUILD_INFO).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return info


def _to_hub_layout(out: Path, prefixes) -> None:
    """Rename the saved tensors as the family's hub checkpoints name them (transformers loads both)."""
    from safetensors.torch import load_file, save_file

    for file in sorted(out.glob("*.safetensors")):
        tensors = load_file(file)
        save_file({rename(n, prefixes): t for n, t in tensors.items()}, file, metadata={"format": "pt"})


def resolve_model_dir(model_cfg) -> Path:
    """The policy directory a `ModelConfig` names: its `path`, or its preset built once (cached)."""
    from medpo_ray.models.corpus import grammar_texts
    from medpo_ray.models.loading import check_model_dir
    from medpo_ray.models.presets import get_preset

    if model_cfg.path:
        return check_model_dir(model_cfg.path)
    family = "" if model_cfg.family == "qwen2_vl" else f"{model_cfg.family}-"  # the default keeps its old name
    out = Path(model_cfg.build_dir) / f"{family}{model_cfg.preset}-seed{model_cfg.seed}"
    if not (out / BUILD_INFO).is_file():  # written last, so its presence means a complete build
        build_model(out, get_preset(model_cfg.preset), grammar_texts(), seed=model_cfg.seed, family=model_cfg.family)
    return out
