"""The reference critic on real VQA answers: normalised matching, the answer span as the only edit,
counterfactual answers from the data's vocabulary balanced per swap, and abstentions that say why."""
from collections import Counter

import pytest

from medpo_ray.config import CriticConfig
from medpo_ray.critics import answer_vocabulary, balance, reference_keep_rates
from medpo_ray.critics.answer import reason_code
from medpo_ray.critics.reference import ReferenceCritic
from medpo_ray.critics.vqa_answers import AnswerVocabulary, normalize
from medpo_ray.data.record import Record
from medpo_ray.editing.pairs import PairLimits, apply_edits

pytestmark = pytest.mark.unit


def q(rid: str, answer: str, qtype: str | None = "organ", atype: str = "open", question: str = "Which organ?"):
    return Record(rid, "vqa", b"", question, answer, question_type=qtype, answer_type=atype)


@pytest.mark.parametrize(("a", "b"), [
    ("Yes.", "yes"), ("yeah", "Yes"), ("NO", "negative"), ("Right side", "right"), ("on the left", "Left"),
    ("both sides", "bilateral"), ("left and right", "Bilateral"), ("Liver, Kidney", "kidney and liver"),
    ("The liver", "liver"), ("two", "2"), ("X-Ray", "x ray"), ("right-sided", "right")])
def test_equivalent_answers_normalise_alike(a, b):
    assert normalize(a) == normalize(b)


@pytest.mark.parametrize(("a", "b"), [("yes", "no"), ("left", "right"), ("left", "bilateral"), ("liver", "livers"),
                                      ("2", "3"), ("CT", "MRI")])
def test_different_answers_stay_different(a, b):
    assert normalize(a) != normalize(b)


@pytest.fixture
def organ_data():
    answers = ["liver"] * 6 + ["kidney"] * 4 + ["lung"] * 3 + ["spleen"]
    return ([q(f"o{i}", a) for i, a in enumerate(answers)]
            + [q(f"y{i}", a, "abnormality", "closed", "Is this abnormal?") for i, a in enumerate(["Yes"] * 7 + ["No"] * 3)])


def test_vocabulary_is_per_question_type_and_capped(organ_data):
    vocab = AnswerVocabulary.from_records(organ_data, choices=3)
    assert vocab.answers == {"organ-open": (("liver", "liver"), ("kidney", "kidney"), ("lung", "lung")),
                             "yesno": (("yes", "Yes"), ("no", "No"))}
    assert vocab.of(organ_data[-1]) == (("yes", "yes"), ("no", "no"))  # yes/no always has both


def _fix(y0: str, verdict) -> str:
    return apply_edits(y0, verdict.edits, PairLimits())


def test_a_wrong_answer_is_replaced_in_place_and_nothing_else(organ_data):
    critic = ReferenceCritic(vocab=AnswerVocabulary.from_records(organ_data))
    rec = q("t", "Liver")
    v = critic.review(rec, "The organ shown is the kidney.")
    assert v.verdict == "wrong" and _fix("The organ shown is the kidney.", v) == "The organ shown is the liver."
    yes_no = q("t2", "No", "abnormality", "closed")
    v = critic.review(yes_no, "Yes, it is.")
    assert v.verdict == "wrong" and _fix("Yes, it is.", v) == "No, it is."
    assert critic.review(yes_no, "nope").verdict == "right"


@pytest.mark.parametrize(("y0", "why"), [("pancreas", "outside the dataset's vocabulary"),
                                         ("liver or kidney", "2 different answers"),
                                         ("", "no answer")])
def test_it_abstains_where_it_cannot_judge_and_says_why(organ_data, y0, why):
    critic = ReferenceCritic(vocab=AnswerVocabulary.from_records(organ_data))
    v = critic.review(q("t", "liver"), y0)
    assert v.verdict == "abstain" and reason_code(v) == "unreadable" and why in v.reason
    v = critic.review(q("t", "yes", "abnormality", "closed"), "It might be.")
    assert v.verdict == "abstain" and "does not open with yes or no" in v.reason


def test_a_right_answer_gets_a_counterfactual_that_the_critic_then_corrects(organ_data):
    critic = ReferenceCritic(vocab=AnswerVocabulary.from_records(organ_data))
    rec = q("t", "kidney")
    v = critic.review(rec, "Kidney")
    assert v.verdict == "right" and v.counterfactual.startswith("vqa-organ-open:kidney>")
    flipped = _fix("Kidney", v)
    assert flipped in ("Liver", "Lung", "Spleen")
    back = critic.review(rec, flipped)
    assert back.verdict == "wrong" and _fix(flipped, back) == "Kidney"


def test_counterfactual_answers_are_balanced_per_swap():
    # Lopsided data: "yes" 4x as common as "no", "liver" 5x "spleen". With the keep rates fitted on the gold
    # answers, every answer is pushed up (y+) as often as it is pushed down (y-), counted from the verdicts.
    organs = ["liver"] * 5 + ["kidney"] * 3 + ["spleen"]
    records = ([q(f"y{i}", "yes" if i % 5 else "no", "presence", "closed") for i in range(500)]
               + [q(f"o{i}", organs[i % 9]) for i in range(450)])
    cfg = CriticConfig()
    vocab = answer_vocabulary(cfg, records)
    critic = ReferenceCritic(keep_rates=reference_keep_rates(cfg, records, vocab=vocab), vocab=vocab)
    up, down = Counter(), Counter()
    for r in records:
        v = critic.review(r, r.target)
        assert v.verdict == "right" or reason_code(v) == "balance"
        if v.verdict == "right":
            old, new = v.counterfactual.split(":", 1)[1].split(">")
            up[old] += 1
            down[new] += 1
    for answer in ("yes", "no", "liver", "kidney", "spleen"):
        assert up[answer] > 15 and 0.7 < up[answer] / down[answer] < 1.43, (answer, up[answer], down[answer])
    raw = Counter(ReferenceCritic(vocab=vocab).review(r, r.target).counterfactual for r in records)
    assert raw["vqa-yesno:yes>no"] > 3 * raw["vqa-yesno:no>yes"]  # the balance is the keep rates' doing
    assert balance.mirror("vqa-yesno:yes>no") == "vqa-yesno:no>yes"
