"""The metric specs and the actors' metric helpers: names Ray exports as specified, labels bounded."""
import math
import re

import pytest

from actors import metrics
from medpo_ray.metrics import BY_NAME, SPECS, check_labels, exported_names, spec

pytestmark = pytest.mark.unit

# Names ARCHITECTURE.md section 6 and issue 7 require (kind, labels).
REQUIRED = {
    "medpo_records_total": ("counter", {"stage", "outcome"}),
    "medpo_stage_seconds": ("histogram", {"stage"}),
    "medpo_queue_depth": ("gauge", {"queue"}),
    "medpo_policy_version": ("gauge", {"role"}),
    "medpo_sample_staleness": ("histogram", set()),
    "medpo_weight_sync_seconds": ("histogram", set()),
    "medpo_loss": ("gauge", {"term"}),
    "medpo_reward_accuracy": ("gauge", {"pair"}),
    "medpo_pairs_total": ("counter", {"branch"}),
    "medpo_critic_errors_total": ("counter", {"reason"}),
    "medpo_critic_seconds": ("histogram", {"backend"}),
    "medpo_bad_records_total": ("counter", {"reason"}),
    "medpo_corruptions_total": ("counter", {"mode", "region"}),
    "medpo_rollout_tokens_total": ("counter", set()),
    "medpo_rollout_tokens_per_second": ("gauge", set()),
    "medpo_logprob_mismatch": ("gauge", set()),
    "medpo_checkpoint_timestamp_seconds": ("gauge", set()),
}


def test_required_metrics_are_specified_with_their_kind_and_labels():
    for name, (kind, labels) in REQUIRED.items():
        assert BY_NAME[name].kind == kind and set(BY_NAME[name].labels) == labels, name


def test_specs_fit_what_ray_accepts_and_exports():
    assert len(BY_NAME) == len(SPECS)
    for s in SPECS:
        assert re.fullmatch(r"medpo_[a-z0-9_]+", s.name), s.name
        # Ray appends `_total` to a counter that lacks it; ours carry it so the exported name is stable.
        assert (s.kind == "counter") == s.name.endswith("_total"), s.name
        if s.kind == "histogram":
            assert s.buckets and all(b > 0 for b in s.buckets) and list(s.buckets) == sorted(set(s.buckets))
        else:
            assert not s.buckets, s.name


def test_exported_names_are_prefixed_and_histograms_have_no_bare_series():
    names = exported_names()
    assert all(n.startswith("ray_medpo_") for n in names)
    assert "ray_medpo_stage_seconds" not in names
    assert {"ray_medpo_stage_seconds_bucket", "ray_medpo_stage_seconds_sum",
            "ray_medpo_stage_seconds_count", "ray_medpo_records_total", "ray_medpo_loss"} <= names
    assert len(names) == sum(3 if s.kind == "histogram" else 1 for s in SPECS)


def test_unknown_metric_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="unknown metric 'medpo_pair_total'.*medpo_pairs_total"):
        spec("medpo_pair_total")


@pytest.mark.parametrize("labels, why", [
    ({}, "declared"),
    ({"branch": "A", "record_id": "r1"}, "declared"),
    ({"branch": 1}, "short identifier"),
    ({"branch": "policy wrong"}, "short identifier"),  # free text (a space)
    ({"branch": "x" * 33}, "short identifier"),  # too long for an enumeration value
    ({"branch": "sk-" + "a" * 48}, "short identifier"),  # an API-key-shaped value
    ({"branch": ""}, "short identifier"),
])
def test_labels_must_be_the_declared_keys_with_identifier_values(labels, why):
    with pytest.raises(ValueError, match=why) as err:
        check_labels(BY_NAME["medpo_pairs_total"], labels)
    assert "sk-" not in str(err.value) and "policy wrong" not in str(err.value)  # no value echoed


def test_labels_accept_enumeration_values():
    assert check_labels(BY_NAME["medpo_corruptions_total"], {"mode": "inpaint", "region": "mask"}) == \
        {"mode": "inpaint", "region": "mask"}
    assert check_labels(BY_NAME["medpo_loss"], {"term": "kl.forward"}) == {"term": "kl.forward"}


def test_helpers_refuse_wrong_kind_value_or_labels():
    with pytest.raises(ValueError, match="is a counter, not a gauge"):
        metrics.set("medpo_pairs_total", 1, branch="A")
    with pytest.raises(ValueError, match="is a gauge, not a histogram"):
        metrics.observe("medpo_loss", 1, term="total")
    with pytest.raises(ValueError, match=">= 0"):
        metrics.inc("medpo_pairs_total", -1, branch="A")
    with pytest.raises(ValueError, match="finite"):
        metrics.inc("medpo_pairs_total", math.inf, branch="A")
    with pytest.raises(ValueError, match="finite"):
        metrics.observe("medpo_weight_sync_seconds", math.nan)
    with pytest.raises(ValueError, match="must be a number"):
        metrics.set("medpo_logprob_mismatch", True)
    with pytest.raises(ValueError, match="declared"):
        metrics.inc("medpo_records_total", 1, stage="rollout")


def test_timed_checks_before_running_the_block():
    ran = []
    with pytest.raises(ValueError, match="declared"), metrics.timed("medpo_stage_seconds"):
        ran.append(1)
    assert not ran


def test_gauges_are_kept_alive_by_one_keeper_thread():
    # Ray records without a cluster (nothing is exported); the integration test proves the export.
    metrics.inc("medpo_pairs_total", 0, branch="A")  # zero is a no-op, not Ray's ValueError
    metrics.set("medpo_loss", math.nan, term="total")
    metrics.set("medpo_loss", 0.5, term="total")
    with metrics.timed("medpo_stage_seconds", stage="rollout"):
        pass
    assert metrics._gauges[("medpo_loss", (("term", "total"),))] == 0.5
    assert metrics._keeper is not None and metrics._keeper.is_alive() and metrics._keeper.daemon
    keeper = metrics._keeper
    metrics.set("medpo_policy_version", 3, role="learner")
    assert metrics._keeper is keeper
