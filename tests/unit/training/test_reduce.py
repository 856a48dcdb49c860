import pytest

from medpo_ray.training.reduce import reduce_metrics

pytestmark = pytest.mark.unit


def test_counts_add_lists_join_and_diagnostics_average_over_kept_pairs():
    r0 = {"loss": 1.0, "pairs": 2.0, "skipped_pairs": 0.0, "examples": 2.0, "bad_examples": 1.0, "step": 5,
          "lr": 0.1, "grad_norm": 3.0, "skipped_step": 0.0, "bad": ["x: image"], "trained_ids": ["a", "b"]}
    r1 = {"loss": 4.0, "pairs": 2.0, "skipped_pairs": 1.0, "examples": 2.0, "bad_examples": 0.0, "step": 5,
          "lr": 0.1, "grad_norm": 3.0, "skipped_step": 0.0, "bad": [], "trained_ids": ["c", "d"], "loss_vis": 0.5}
    out = reduce_metrics([r0, r1])
    assert out["loss"] == pytest.approx((1.0 * 2 + 4.0 * 1) / 3)  # weighted by kept pairs: 2 and 1
    assert out["loss_vis"] == 0.5  # reported by one rank only
    assert out["pairs"] == 4 and out["skipped_pairs"] == 1 and out["examples"] == 4 and out["bad_examples"] == 1
    assert out["trained_ids"] == ["a", "b", "c", "d"] and out["bad"] == ["x: image"]
    assert out["step"] == 5 and out["lr"] == 0.1 and out["grad_norm"] == 3.0


def test_a_skipped_step_reduces_without_diagnostics():
    skipped = {"step": 2, "skipped_step": 1.0, "examples": 0.0, "bad_examples": 2.0, "bad": ["e: image"],
               "trained_ids": []}
    out = reduce_metrics([skipped, dict(skipped, bad=[], bad_examples=0.0)])
    assert out["skipped_step"] == 1.0 and out["examples"] == 0 and out["bad"] == ["e: image"]
    assert "loss" not in out
