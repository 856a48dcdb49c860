"""Paired statistics: checked against values worked out by hand and against a normal approximation."""
import math

import numpy as np
import pytest

from medpo_ray.eval.stats import bootstrap_mean, mcnemar, metric_items, paired_bootstrap, seed_mean

pytestmark = pytest.mark.unit


def test_mcnemar_exact_binomial():
    # 10 discordant records, 8 to 2: two-sided exact p = 2 * P(X <= 2 | n=10, 1/2) = 2 * 56/1024.
    a = {f"r{i}": 1.0 for i in range(8)} | {f"r{i}": 0.0 for i in range(8, 10)} | {f"s{i}": 1.0 for i in range(30)}
    b = {f"r{i}": 0.0 for i in range(8)} | {f"r{i}": 1.0 for i in range(8, 10)} | {f"s{i}": 1.0 for i in range(30)}
    out = mcnemar(a, b)
    assert (out["a_only"], out["b_only"]) == (8, 2)
    assert out["p"] == pytest.approx(2 * 56 / 1024)
    assert mcnemar(a, a)["p"] == 1.0


def test_bootstrap_interval_matches_the_normal_approximation():
    rng = np.random.default_rng(1)
    x = {f"r{i}": float(v) for i, v in enumerate(rng.random(2000) < 0.3)}
    out = bootstrap_mean(x)
    se = math.sqrt(out["mean"] * (1 - out["mean"]) / 2000)
    assert out["lo"] == pytest.approx(out["mean"] - 1.96 * se, abs=0.004)
    assert out["hi"] == pytest.approx(out["mean"] + 1.96 * se, abs=0.004)


def test_paired_bootstrap_sees_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(2)
    base = rng.random(1000)
    a = {f"r{i}": float(v < 0.60) for i, v in enumerate(base)}
    better = {f"r{i}": float(v < 0.66) for i, v in enumerate(base)}  # +6 points on the same records
    out = paired_bootstrap(better, a)
    assert out["diff"] == pytest.approx(((base >= 0.60) & (base < 0.66)).mean())
    assert out["lo"] > 0 and out["p"] < 0.001
    noise = {k: float(rng.random() < 0.6) for k in a}  # unrelated draws at the same rate
    null = paired_bootstrap(noise, a)
    assert null["lo"] < 0 < null["hi"] or abs(null["diff"]) > 0.03  # the interval holds 0 unless the draw is odd
    assert paired_bootstrap(a, a)["p"] == 1.0


def test_seed_mean_and_item_metric():
    assert seed_mean([{"a": 1.0, "b": 0.0}, {"a": 0.0}]) == {"a": 0.5, "b": 0.0}
    items = {"r1": {"exact": 1, "hallucinated": 2}, "q1": {"vqa_closed": 0}}
    assert metric_items(items, "exact") == {"r1": 1.0} and metric_items(items, "vqa_closed") == {"q1": 0.0}
