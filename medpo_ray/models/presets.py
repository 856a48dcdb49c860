"""Size presets of the embedded Qwen2-VL policy and the HF config they expand to.

`tiny` is for tests (the recipe's ~0.8M model), `demo` is the DATA.md learnability setting (text 128 x 2
layers, vision 64 x 2 blocks, 112 px image -> 16 image tokens, ~0.7M with the project's small
vocabulary), `small` (~30M) is for throughput benchmarks, where matmuls rather than per-call overheads
dominate.
"""
from __future__ import annotations

from dataclasses import dataclass

from medpo_ray.errors import MedpoError


@dataclass(frozen=True)
class ModelPreset:
    """Architecture knobs of one preset (everything else is fixed by Qwen2-VL)."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vision_depth: int
    vision_embed: int
    vision_heads: int
    vocab: int  # BPE vocabulary before the special tokens
    max_pixels: int = 112 * 112  # 112 px -> 4 x 4 merged cells = 16 image tokens
    min_pixels: int = 56 * 56
    max_position: int = 4096

    @property
    def head_dim(self) -> int:
        """Per-head width of the text attention."""
        return self.hidden // self.heads

    def mrope_section(self) -> list[int]:
        """Split of head_dim/2 rotary frequencies over (temporal, height, width), as Qwen2-VL does."""
        half = self.head_dim // 2
        t = half // 4
        h = (half - t) // 2
        return [t, h, half - t - h]


PRESETS: dict[str, ModelPreset] = {
    "tiny": ModelPreset("tiny", hidden=128, layers=2, heads=4, kv_heads=2, intermediate=256,
                        vision_depth=2, vision_embed=64, vision_heads=4, vocab=1000),
    "demo": ModelPreset("demo", hidden=128, layers=2, heads=4, kv_heads=2, intermediate=256,
                        vision_depth=2, vision_embed=64, vision_heads=4, vocab=512),
    "small": ModelPreset("small", hidden=512, layers=8, heads=8, kv_heads=4, intermediate=1792,
                         vision_depth=2, vision_embed=128, vision_heads=4, vocab=2000),
}


def get_preset(name: str) -> ModelPreset:
    """The named preset, or an error listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise MedpoError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}") from None


def qwen2vl_config_kwargs(preset: ModelPreset, vocab_size: int, ids: dict[str, int]) -> dict:
    """Keyword arguments of `transformers.Qwen2VLConfig` for a preset and its tokenizer's special ids."""
    return dict(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=preset.hidden, intermediate_size=preset.intermediate,
            num_hidden_layers=preset.layers, num_attention_heads=preset.heads,
            num_key_value_heads=preset.kv_heads, max_position_embeddings=preset.max_position,
            rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "mrope_section": preset.mrope_section()},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=preset.vision_depth, embed_dim=preset.vision_embed, hidden_size=preset.hidden,
            num_heads=preset.vision_heads, mlp_ratio=2, in_channels=3, patch_size=14,
            spatial_merge_size=2, temporal_patch_size=2, hidden_act="quick_gelu",
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
