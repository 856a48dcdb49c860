"""BLEU / ROUGE-L wrappers against n-gram and LCS counts done by hand."""
import math

import pytest

from medpo_ray.eval.metrics import text_similarity

pytestmark = pytest.mark.unit


def test_bleu_matches_hand_counted_ngram_precisions():
    # "a b c d e" vs "a b c d f": 1..4-gram matches 4/5, 3/4, 2/3, 1/2; same length, so no brevity penalty.
    got = text_similarity(["a b c d e"], ["a b c d f"])
    assert got["bleu"] == pytest.approx(100 * (0.8 * 0.75 * (2 / 3) * 0.5) ** 0.25, abs=1e-6)


def test_bleu_is_pooled_over_the_corpus_not_averaged():
    got = text_similarity(["a b c d e", "x y z w"], ["a b c d f", "x y z w"])
    expected = 100 * ((8 / 9) * (6 / 7) * (4 / 5) * (2 / 3)) ** 0.25
    assert got["bleu"] == pytest.approx(expected, abs=1e-6)


def test_rouge_l_is_lcs_f_measure_averaged_per_report():
    # LCS("the cat sat on the mat", "the cat is on the mat") = 5 of 6 words each way; identical -> 1.
    got = text_similarity(["the cat sat on the mat", "left effusion"], ["the cat is on the mat", "left effusion"])
    assert got["rouge_l"] == pytest.approx((5 / 6 + 1.0) / 2)
    assert got["n"] == 2


def test_identical_and_empty():
    same = text_similarity(["FINDINGS: no nodule in the right lung."] * 2, ["FINDINGS: no nodule in the right lung."] * 2)
    assert math.isclose(same["bleu"], 100.0) and same["rouge_l"] == 1.0
    assert text_similarity([], []) == {"bleu": None, "rouge_l": None, "n": 0}
