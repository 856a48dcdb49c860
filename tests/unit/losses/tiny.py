"""A tiny Qwen2-VL-style tokenizer and a tiny random causal LM, built offline for the loss tests and bench.

The tokenizer is a byte-level BPE trained here on report-like sentences, with the Qwen2-VL special
tokens and its chat template (an image placeholder in the user turn, EOS `<|im_end|>`). The model is
a random text-only Qwen2 causal LM: the image side is modelled by giving x and x~ different prompts.
"""
from __future__ import annotations

import random

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_SIDES = ["left", "right"]
_FINDINGS = ["nodule", "mass", "opacity", "effusion", "lesion", "consolidation"]
_SIZES = ["small", "moderate", "large"]
_ORGANS = ["lung", "liver", "kidney", "brain"]


def report_sentences(n: int = 400, seed: int = 0) -> list[str]:
    """Deterministic report-like sentences (findings, sides, sizes, counts, mm)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        side, find, size, organ = (rng.choice(x) for x in (_SIDES, _FINDINGS, _SIZES, _ORGANS))
        mm = rng.randint(2, 40)
        out.append(rng.choice([
            f"There is a {size} {find} in the {side} {organ}, measuring {mm} mm.",
            f"No {find} is seen in the {side} {organ}.",
            f"Findings: {rng.randint(1, 4)} {find}s in the {side} {organ}. Impression: {size} {find}.",
            f"What is the size of the {find} in the {side} {organ}? Answer: {size}.",
            f"Describe the {organ} image. The {side} {organ} shows a {size} {find}.",
        ]))
    return out


def build_tokenizer(vocab_size: int = 600):
    """A fast byte-level BPE tokenizer with Qwen2-VL specials, EOS `<|im_end|>` and its chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(report_sentences(), trainer=trainer)
    tok.add_special_tokens(SPECIALS)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    hf.chat_template = CHAT_TEMPLATE
    return hf


def build_model(vocab_size: int, hidden: int = 64, layers: int = 2, seed: int = 0):
    """A random Qwen2 causal LM (fp32, eval mode so dropout cannot make two forwards differ)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=1024, tie_word_embeddings=False)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        # Random init is ~N(0, 0.02): a wider head gives non-uniform next-token distributions.
        model.lm_head.weight.normal_(0, 0.5)
    return model.eval()
