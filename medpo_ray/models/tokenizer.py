"""Byte-level BPE tokenizer of the embedded policy, trained offline on the project's own text, plus
the Qwen2-VL special tokens and chat template (so vLLM and transformers treat it as a Qwen2-VL)."""
from __future__ import annotations

from collections.abc import Iterable

from medpo_ray.errors import MedpoError

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
# Tokens that only the processor may place: a completion must never contain them.
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
SYSTEM_PROMPT = "You are a helpful assistant."

CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# LLaVA-style tokenizers (llava-hf, LLaVA-Med on Mistral): sentence markers, padding and the image token.
LLAVA_SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<image>"]
# The llava-hf 1.5 conversation format ("USER: <image>\n... ASSISTANT:").
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}<image>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
# The words each chat template itself writes, so they get merges like the data's words (the Qwen list is
# what the embedded policy has always been trained with: changing it changes every built tokenizer).
_TEMPLATE_TEXT = {"qwen": ["system", "user", "assistant", SYSTEM_PROMPT], "llava": ["USER:", "ASSISTANT:"]}


def train_tokenizer(texts: Iterable[str], vocab: int, model_max_length: int = 4096, style: str = "qwen"):
    """A `PreTrainedTokenizerFast`: byte-level BPE with at most `vocab` learned entries, then the specials
    and chat template of `style` ("qwen": Qwen2-VL's; "llava": llava-hf's).

    Training is deterministic for the same texts in the same order (the trainer breaks count ties by
    the pair itself), so the factory's output is byte-identical across runs.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [t for t in texts if t and t.strip()]
    if not corpus:
        raise MedpoError("tokenizer corpus is empty: no report, question, answer or prompt text found")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(corpus + _TEMPLATE_TEXT[style] * 2, trainer=trainer)
    if style == "llava":
        tok.add_special_tokens(LLAVA_SPECIAL_TOKENS)
        hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", bos_token="<s>",
                                         unk_token=None, extra_special_tokens={"image_token": "<image>"})
        hf_tok.chat_template = LLAVA_CHAT_TEMPLATE
    else:
        tok.add_special_tokens(SPECIAL_TOKENS)  # appended after the learned vocabulary
        hf_tok = PreTrainedTokenizerFast(
            tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
            bos_token=None,
            extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                                  "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"},
        )
        hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.model_max_length = model_max_length
    return hf_tok


def special_ids(tokenizer) -> dict[str, int]:
    """Id of every Qwen2-VL special token in `tokenizer`."""
    return {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
