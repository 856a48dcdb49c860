"""Word diff: spans rebuild the edited text, masks are non-empty on both sides, EOS is never masked."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medpo_ray.editing.diff import tokenize, word_diff
from medpo_ray.editing.token_masks import spans_to_token_mask, token_mask_for_text

pytestmark = pytest.mark.unit

PIECES = ["left", "right", "small", "no", "effusion", "12", "mm", "é", "ß", "Ω", "٣", "e\u0301", "日本",
          "🙂", ",", ".", ";", "-", "(", ")", "'", " ", " ", "  ", "\t", "\n", "\u00a0"]
texts = st.one_of(st.lists(st.sampled_from(PIECES), max_size=14).map("".join), st.text(max_size=30))


def rebuild(a, spans_a, b, spans_b):
    """Replace each span of a by the paired span of b (an independent reading of the contract)."""
    out, pos = [], 0
    for (s, e), (u, v) in zip(spans_a, spans_b, strict=True):
        out += [a[pos:s], b[u:v]]
        pos = e
    return "".join(out) + a[pos:]


def check_spans(text, spans):
    pos = 0
    for s, e in spans:
        assert pos <= s <= e <= len(text)
        pos = e


@settings(max_examples=400, deadline=None)
@given(texts, texts)
def test_spans_rebuild_b_from_a(a, b):
    spans_a, spans_b = word_diff(a, b)
    check_spans(a, spans_a)
    check_spans(b, spans_b)
    assert rebuild(a, spans_a, b, spans_b) == b
    assert (spans_a == []) == (a == b)
    if a != b and tokenize(a) and tokenize(b):
        # Both sides have words, so both masks are non-empty, span by span.
        assert all(e > s for s, e in spans_a) and all(e > s for s, e in spans_b)


@settings(max_examples=200, deadline=None)
@given(texts, texts)
def test_spans_cover_whole_tokens(a, b):
    spans_a, _ = word_diff(a, b)
    starts = {s for _, s, _ in tokenize(a)} | {0}
    ends = {e for _, _, e in tokenize(a)} | {len(a)}
    assert all(s in starts and e in ends for s, e in spans_a)


@pytest.mark.parametrize(("a", "b", "marked_a", "marked_b"), [
    ("small left pleural effusion.", "small right pleural effusion.", ["left"], ["right"]),
    # Pure deletion / insertion: the neighbouring word is marked on both sides.
    ("no large effusion", "no effusion", ["no large"], ["no"]),
    ("no effusion", "no large effusion", ["no"], ["no large"]),
    ("effusion is seen", "no effusion is seen", ["effusion"], ["no effusion"]),
    ("two nodules, 12 mm.", "three nodules, 14 mm.", ["two", "12"], ["three", "14"]),
    ("left", "right", ["left"], ["right"]),
    # Whitespace is not a word: a changed gap marks the words around it.
    ("a  b c", "a b c", ["a  b"], ["a b"]),
])
def test_examples(a, b, marked_a, marked_b):
    spans_a, spans_b = word_diff(a, b)
    assert [a[s:e] for s, e in spans_a] == marked_a
    assert [b[s:e] for s, e in spans_b] == marked_b


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(PIECES[:17]), min_size=1, max_size=10).map(" ".join),
       st.lists(st.sampled_from(PIECES[:17]), min_size=1, max_size=10).map(" ".join))
def test_token_masks_non_empty_and_eos_never_masked(tokenizer, a, b):
    spans_a, spans_b = word_diff(a, b)
    for text, spans in ((a, spans_a), (b, spans_b)):
        ids, mask = token_mask_for_text(tokenizer, text, spans)
        assert len(mask) == len(ids)
        assert any(mask) == (a != b)
        # As in training: the post-processor appends EOS, whose offsets are empty.
        enc = tokenizer(text, return_offsets_mapping=True)
        assert enc["input_ids"][-1] == tokenizer.eos_token_id
        assert spans_to_token_mask(enc["offset_mapping"], spans)[-1] == 0
        assert spans_to_token_mask(enc["offset_mapping"], [(0, len(text))])[-1] == 0
        # EOS written into the text (chat templates do this): the spans end before it.
        enc = tokenizer(text + tokenizer.eos_token, add_special_tokens=False, return_offsets_mapping=True)
        assert enc["input_ids"][-1] == tokenizer.eos_token_id
        assert spans_to_token_mask(enc["offset_mapping"], spans)[-1] == 0


def _bpe():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[UNK]", "A", " ", "1", "2", "7", "m", " 7", " m", " mm"])}
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[(" ", "7"), (" ", "m"), (" m", "m")], unk_token="[UNK]"))
    return PreTrainedTokenizerFast(tokenizer_object=bpe)


def test_a_counterfactual_of_another_token_shape_is_rejected_a_correction_is_not():
    from medpo_ray.critics.base import CriticVerdict, Edit
    from medpo_ray.data.record import Record
    from medpo_ray.editing.pairs import PreferencePair, Rejection, build_pair

    rec = Record("r1", "report", b"", "Describe.", "A 12 mm")
    swap = (Edit("12", "7", 2, "measurement"),)
    out = build_pair(rec, "A 12 mm", CriticVerdict("right", swap, "t"), 0, tokenizer=_bpe())
    assert isinstance(out, Rejection) and out.reason == "token_shape"
    fix = build_pair(rec, "A 12 mm", CriticVerdict("wrong", swap, "t"), 0, tokenizer=_bpe())
    assert isinstance(fix, PreferencePair)
    same = build_pair(rec, "A 12 mm", CriticVerdict("right", (Edit("12", "21", 2, "measurement"),), "t"), 0,
                      tokenizer=_bpe())
    assert isinstance(same, PreferencePair)


def test_space_token_of_a_split_number_is_in_the_mask():
    """A BPE that writes " 7" as one token but " 12" as " " + "1" + "2": the first token where y+ and y-
    differ (" " vs " 7") must be masked on both sides, though the word diff's spans start after the space."""
    tok = _bpe()
    y_minus, y_plus = "A 7 mm", "A 12 mm"
    spans_minus, spans_plus = word_diff(y_minus, y_plus)
    ids_minus, mask_minus = token_mask_for_text(tok, y_minus, spans_minus)
    ids_plus, mask_plus = token_mask_for_text(tok, y_plus, spans_plus)
    assert [tok.decode([i]) for i in ids_plus] == ["A", " ", "1", "2", " mm"]
    assert [tok.decode([i]) for i in ids_minus] == ["A", " 7", " mm"]
    first = next(i for i, (a, b) in enumerate(zip(ids_plus, ids_minus, strict=False)) if a != b)
    assert mask_plus[first] == mask_minus[first] == 1
    assert mask_plus == [0, 1, 1, 1, 0] and mask_minus == [0, 1, 0]
    # Without the text (offsets only) the space token is left out: the gap this closes.
    enc = tok(y_plus, add_special_tokens=False, return_offsets_mapping=True)
    assert spans_to_token_mask(enc["offset_mapping"], spans_plus) == [0, 0, 1, 1, 0]
