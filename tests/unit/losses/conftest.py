"""Fixtures for the loss tests: a tiny tokenizer with a Qwen2-VL chat template, and example pairs."""
import zlib

import pytest
import torch

from medpo_ray.losses import PairExample, chat_prompt_ids
from tests.unit.losses.tiny import build_tokenizer


@pytest.fixture(scope="session")
def tok():
    return build_tokenizer()


def span_of(text: str, word: str) -> tuple[int, int]:
    """Character span of the first occurrence of `word` in `text`."""
    i = text.index(word)
    return i, i + len(word)


@pytest.fixture(scope="session")
def examples(tok):
    """Three minimal-edit pairs (one without a corrupted image), as the span editor would emit them."""
    out = []
    for i, (pos, neg, word_pos, word_neg, h) in enumerate([
        ("There is a small nodule in the left lung, measuring 12 mm.",
         "There is a large nodule in the left lung, measuring 12 mm.", "small", "large", True),
        ("No effusion is seen in the right lung.", "There is a moderate effusion in the right lung.",
         "No", "There is a moderate", True),
        ("Findings: 2 masss in the left liver.", "Findings: 3 masss in the left liver.", "2", "3", False),
    ]):
        prompt = chat_prompt_ids(tok, f"Describe the image {i}.", image_tokens=4)
        corrupt = chat_prompt_ids(tok, f"Describe the noisy image {i}.", image_tokens=4)
        out.append(PairExample(f"ex{i}", prompt, pos, neg, [span_of(pos, word_pos)], [span_of(neg, word_neg)],
                               has_corrupt=h, corrupt_prompt_ids=corrupt if h else None))
    return out


def logits_for(batch, vocab: int, tag: int = 0, scale: float = 2.0, dtype=torch.float64):
    """Random logits [R, T, V] keyed by (example id, pair, position), so a row's values do not depend on
    where the row sits in the batch or on how far the batch is padded."""
    R, T = batch.input_ids.shape
    out = torch.empty(R, T, vocab, dtype=dtype)
    for r in range(R):
        key = f"{batch.record_ids[int(batch.row_example[r])]}/{int(batch.row_pair[r])}/{tag}"
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        out[r] = (torch.randn(256, vocab, generator=g, dtype=torch.float64) * scale)[:T].to(dtype)
    return out
