"""Batch builder: pair-major concatenation, chat-template prompts, span -> token masks, EOS, bad examples."""
import pytest

from medpo_ray.config import LossConfig
from medpo_ray.losses import (
    LossInputError,
    PairExample,
    build_preference_batch,
    chat_prompt_ids,
    needed_pairs,
)
from medpo_ray.losses.batch import ALL_PAIRS, X_NEG, X_POS, XC_NEG, XC_POS

pytestmark = pytest.mark.unit


def test_prompt_comes_from_the_chat_template_with_expanded_image_tokens(tok):
    ids = chat_prompt_ids(tok, "Describe the image.", image_tokens=5)
    text = tok.decode(ids)
    assert "<|vision_start|>" + "<|image_pad|>" * 5 + "<|vision_end|>Describe the image.<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert "<|image_pad|>" not in tok.decode(chat_prompt_ids(tok, "Describe.", image_tokens=0))


def test_rows_are_pair_major_and_route_to_examples_and_images(tok, examples):
    batch = build_preference_batch(examples, tok)
    B = batch.num_examples
    assert B == 3 and batch.record_ids == ["ex0", "ex1", "ex2"] and batch.bad == []
    assert batch.has_corrupt.tolist() == [True, True, False]
    # 2 + 2 + 2 + 2 - the two x~ rows of ex2, which has no corrupted image
    assert batch.input_ids.shape[0] == 10
    assert batch.row_pair.tolist() == [X_POS] * 3 + [X_NEG] * 3 + [XC_NEG] * 2 + [XC_POS] * 2
    assert batch.pair_rows[:, 2].tolist() == [2, 5, -1, -1]
    for p in ALL_PAIRS:
        for b in range(B):
            r = int(batch.pair_rows[p, b])
            if r >= 0:
                assert int(batch.row_example[r]) == b and int(batch.row_pair[r]) == p
                assert int(batch.row_image[r]) == b + (B if p in (XC_NEG, XC_POS) else 0)
    moved = batch.to("cpu")
    assert moved.record_ids == batch.record_ids and moved.input_ids.equal(batch.input_ids)
    ex = examples[0]
    r = int(batch.pair_rows[XC_POS, 0])
    assert batch.input_ids[r, :len(ex.corrupt_prompt_ids)].tolist() == list(ex.corrupt_prompt_ids)


def test_masks_follow_spans_and_never_cover_eos_prompt_or_padding(tok, examples):
    batch = build_preference_batch(examples, tok)
    for r in range(batch.input_ids.shape[0]):
        ex = examples[int(batch.row_example[r])]
        pos = int(batch.row_pair[r]) in (X_POS, XC_POS)
        text = ex.chosen if pos else ex.rejected
        c, m, ids = batch.completion_mask[r], batch.edit_mask[r], batch.input_ids[r]
        comp = ids[c.bool()].tolist()
        assert comp[-1] == tok.eos_token_id and tok.decode(comp[:-1]) == text
        n = int(batch.attention_mask[r].sum())
        assert c[n:].sum() == 0 and (ids[n:] == tok.pad_token_id).all()
        assert m[n - 1] == 0 and ((m == 1) <= (c == 1)).all()
        a, b = (ex.chosen_spans if pos else ex.rejected_spans)[0]
        assert tok.decode(ids[m.bool()].tolist()).strip() == text[a:b]


def test_needed_pairs_follow_the_config(tok, examples):
    assert needed_pairs(LossConfig(preset="dpo")) == (X_POS, X_NEG)
    assert needed_pairs(LossConfig()) == ALL_PAIRS
    assert needed_pairs(LossConfig(preset="mdpo")) == (X_POS, X_NEG, XC_POS)
    assert needed_pairs(LossConfig(vis_mode="v2")) == (X_POS, X_NEG, XC_NEG)
    batch = build_preference_batch(examples, tok, pairs=needed_pairs(LossConfig(preset="dpo")))
    assert batch.input_ids.shape[0] == 6 and (batch.pair_rows[2:] == -1).all()


def test_bad_examples_are_named_counted_and_lose_nothing_else(tok, examples):
    p = examples[0].prompt_ids
    bad = [
        PairExample("span_out", p, "No mass.", "A mass.", [(0, 2)], [(3, 40)]),
        PairExample("empty_y", p, "   ", "A mass.", [], [(2, 6)]),
        PairExample("no_prompt", [], "No mass.", "A mass.", [(0, 2)], [(2, 6)]),
        PairExample("too_long", p, "mass " * 200, "A mass.", [(0, 4)], [(2, 6)]),
        PairExample("not_text", p, None, "A mass.", [], [(2, 6)]),
        PairExample("bad_spans", p, "No mass.", "A mass.", [(0, 2)], [("a",)]),
        PairExample("bad_id", [*p[:-1], 10**6], "No mass.", "A mass.", [(0, 2)], [(2, 6)]),
    ]
    batch = build_preference_batch([bad[0], examples[0], *bad[1:], examples[1]], tok, max_length=256)
    assert batch.record_ids == ["ex0", "ex1"]
    got = {b.record_id: (b.field, b.reason) for b in batch.bad}
    assert got["span_out"][0] == "rejected_spans" and "outside the text" in got["span_out"][1]
    assert got["empty_y"] == ("chosen", "empty response")
    assert got["no_prompt"][0] == "prompt_ids"
    assert got["too_long"][0] == "prompt + response" and "max_length 256" in got["too_long"][1]
    assert got["not_text"] == ("chosen", "expected a string, got NoneType")
    assert got["bad_spans"][0] == "rejected_spans" and "character offsets" in got["bad_spans"][1]
    assert got["bad_id"][0] == "prompt_ids" and "1000000" in got["bad_id"][1]
    assert "record 'span_out', field 'rejected_spans'" in str(batch.bad[0])
    with pytest.raises(LossInputError, match="no usable example.*empty_y"):
        build_preference_batch(bad[1:2], tok)
