"""Pair builder: orientation by branch, every rejection reason, duplicates, counts."""
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from medpo_ray.critics.base import CriticVerdict, Edit
from medpo_ray.data.record import Record
from medpo_ray.editing.pairs import REASONS, PairBuilder, PairLimits, PreferencePair, Rejection, build_pair

pytestmark = pytest.mark.unit

REC = Record(record_id="s1/report", task="report", image=b"", prompt="Describe.", target="")
Y0 = "There is a small left pleural effusion. No pneumothorax."


def wrong(*edits, raw="{}"):
    return CriticVerdict("wrong", tuple(edits), critic="reference", raw=raw)


def right(*edits):
    return CriticVerdict("right", tuple(edits), critic="reference")


def test_branch_a_corrects_y0():
    pair = build_pair(REC, Y0, wrong(Edit("left", "right", kind="laterality")), policy_version=3)
    assert isinstance(pair, PreferencePair)
    assert (pair.branch, pair.y_minus, pair.policy_version) == ("A", Y0, 3)
    assert pair.y_plus == Y0.replace("left", "right")
    assert [pair.y_plus[a:b] for a, b in pair.spans_plus] == ["right"]
    assert [pair.y_minus[a:b] for a, b in pair.spans_minus] == ["left"]
    assert (pair.critic, pair.edit_kinds) == ("reference", ("laterality",))


def test_branch_b_makes_counterfactual_and_uses_start():
    start = Y0.index("No")
    pair = build_pair(REC, Y0, right(Edit("No pneumothorax", "Small pneumothorax", start=start)), 0)
    assert (pair.branch, pair.y_plus) == ("B", Y0)
    assert pair.y_minus == "There is a small left pleural effusion. Small pneumothorax."
    assert [pair.y_minus[a:b] for a, b in pair.spans_minus] == ["Small"]


def test_several_edits_apply_at_their_places_and_raw_is_truncated():
    y0 = "Two nodules on the left, 12 mm."
    verdict = wrong(Edit("Two", "Three", kind="count"), Edit("12", "14", kind="measurement"), raw="x" * 5000)
    pair = build_pair(REC, y0, verdict, 1, PairLimits(raw_chars=100))
    assert pair.y_plus == "Three nodules on the left, 14 mm."
    assert [pair.y_plus[a:b] for a, b in pair.spans_plus] == ["Three", "14"]
    assert pair.raw == "x" * 100


def test_short_vqa_answer_is_exempt_from_report_filters():
    rec = Record(record_id="s1/q2", task="vqa", image=b"", prompt="Is there a nodule?", target="yes")
    pair = build_pair(rec, "yes", wrong(Edit("yes", "no")), 0)
    assert (pair.y_plus, pair.y_minus, pair.spans_plus) == ("no", "yes", ((0, 2),))


CASES = {
    "abstain": (Y0, CriticVerdict("abstain", critic="openai", reason="cannot tell")),  # no known code
    "timeout": (Y0, CriticVerdict("abstain", critic="openai", reason="timeout: after 3 tries")),  # its own code
    "injection": (Y0, CriticVerdict("abstain", critic="openai", reason="injection: 'ignore previous'")),
    "no_edits": (Y0, wrong()),
    "bad_text": (Y0, wrong(Edit("left", "ri\x00ght"))),
    "empty_text": ("   ", wrong(Edit(" ", "x", start=0))),
    "too_long": ("left " * 2000, wrong(Edit("left", "right", start=0))),
    "edit_not_found": (Y0, wrong(Edit("right", "left"))),
    "edit_ambiguous": ("left and left", wrong(Edit("left", "right"))),
    "overlapping_edits": (Y0, wrong(Edit("small left", "large left"), Edit("left pleural", "right pleural"))),
    "no_change": (Y0, wrong(Edit("left", "left"))),
    "too_many_edited_words": (Y0, wrong(Edit("There is a small left pleural", "We see no clear"))),
    "low_similarity": ("a b c d e f g h", wrong(Edit("b", "x"), Edit("d", "y"), Edit("f", "z"), Edit("h", "w"))),
}


@pytest.mark.parametrize("reason", sorted(CASES))
def test_each_rejection_reason(reason):
    y0, verdict = CASES[reason]
    out = build_pair(REC, y0, verdict, 0, PairLimits(max_chars=4096, max_edit_fraction=0.5, min_similarity=0.6))
    assert isinstance(out, Rejection)
    assert out.reason == reason
    assert "s1/report" in str(out)


@pytest.mark.parametrize(("y0", "edit", "reason"), [
    (Y0, Edit("left", "right", start=0), "edit_not_found"),  # start does not point at `old`
    (Y0, Edit("left", "right", start=10_000), "edit_not_found"),
    (Y0, Edit("", "no", ), "edit_ambiguous"),  # an insertion without a place
    (Y0, Edit("left", "x" * 9000), "too_long"),
    (Y0, Edit("left", "", kind="laterality"), None),  # a deletion is a fine edit
    (Y0, Edit("", "very ", start=Y0.index("small")), None),  # so is an insertion at a start
    ("", Edit("", "x", start=0), "empty_text"),
    (Y0, Edit(Y0, "   "), "empty_text"),
])
def test_edit_placement(y0, edit, reason):
    out = build_pair(REC, y0, wrong(edit), 0)
    if reason is None:
        assert isinstance(out, PreferencePair), out
        assert out.spans_plus and out.spans_minus
    else:
        assert isinstance(out, Rejection) and out.reason == reason, out


def test_insertions_at_one_point_overlap():
    out = build_pair(REC, Y0, wrong(Edit("", "a ", start=0), Edit("", "b ", start=0)), 0)
    assert out.reason == "overlapping_edits"


def test_empty_token_mask_is_rejected_with_a_real_tokenizer():
    # A normalizer that drops "~" (as real ones drop format characters): the only change has no token.
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "no": 1, "effusion": 2}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Replace("~", "")
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    y0 = "no effusion ~"
    assert isinstance(build_pair(REC, y0, wrong(Edit("~", "~~")), 0), PreferencePair)
    out = build_pair(REC, y0, wrong(Edit("~", "~~")), 0, tokenizer=hf)
    assert isinstance(out, Rejection) and out.reason == "empty_mask", out
    assert isinstance(build_pair(REC, y0, wrong(Edit("no", "an")), 0, tokenizer=hf), PreferencePair)


def test_builder_counts_and_drops_duplicates():
    builder = PairBuilder()
    recs = [REC, REC, REC, Record("s2/report", "report", b"", "Describe.", "")]
    answers = [Y0, Y0, Y0, Y0]
    verdicts = [wrong(Edit("left", "right")), wrong(Edit("left", "right")), wrong(Edit("right", "x")),
                right(Edit("left", "right"))]
    batch = builder.build_batch(recs, answers, verdicts, policy_version=2)
    assert [p.record_id for p in batch.pairs] == ["s1/report", "s2/report"]
    assert [r.reason for r in batch.rejections] == ["duplicate", "edit_not_found"]
    assert batch.counts() == {"pairs_A": 1, "pairs_B": 1, "duplicate": 1, "edit_not_found": 1}
    builder.build(REC, Y0, CriticVerdict("abstain", reason="not JSON"), 2)
    assert builder.counts == {"pairs_A": 1, "pairs_B": 1, "duplicate": 1, "edit_not_found": 1, "abstain": 1}
    assert set(builder.counts) - {"pairs_A", "pairs_B"} <= set(REASONS)
    # The editor stage's typed result, on one answer per record as the pipeline sends them.
    s3 = Record("s3/report", "report", b"img", "Describe.", "")
    one = PairBuilder().build_batch([REC, recs[3], s3], [Y0] * 3, [verdicts[0], verdicts[3], verdicts[2]], [2, 2, 1])
    out = one.outcome(seconds=0.5, offered={"presence:no>a": 2})
    assert out.stage == "editor" and out.kept == ("s1/report", "s2/report")
    assert out.dropped == {"s3/report": "edit_not_found"} and out.versions == {"s1/report": 2, "s2/report": 2}
    assert out.kinds == {"s1/report": "A:?", "s2/report": "B:?"} and out.offered == {"presence:no>a": 2}
    assert one.pairs[0].prompt == REC.prompt and one.pairs[0].image == b""  # x comes with x~, at corruption
    assert one.pairs[0].with_images(b"x", None).image == b"x"
    with pytest.raises(ValueError, match="2 records, 1 answers"):
        builder.build_batch(recs[:2], answers[:1], verdicts[:1], 0)
    again = PairBuilder().build_batch(recs[:2], answers[:2], [verdicts[0], verdicts[3]], policy_version=[4, 5])
    assert [p.policy_version for p in again.pairs] == [4, 5]
