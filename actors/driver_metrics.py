"""The driver's Prometheus metrics: what the driver (driver/loop.py) records about stages, steps and checkpoints.

The driver is a Ray process like the actors, so it records through actors/metrics.py (names and labels
checked against medpo_ray.metrics.SPECS); keeping the calls here keeps the loop short.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable

from actors import metrics
from medpo_ray.metrics import LABEL_VALUE

# Learner metrics that feed labelled gauges: the learner's key -> the label value.
LOSS_TERMS = {"loss": "total", "loss_pref": "pref", "loss_anchor": "anchor", "loss_nll": "nll",
              "loss_kl": "kl", "loss_vis": "vis"}
REWARD_ACCURACY = {"reward_acc_pref": "pref", "reward_acc_vis": "vis"}


def _label(text: str) -> str:
    """A reason code as a label value: identifier characters only, at most 32, else 'other'."""
    code = re.sub(r"[^A-Za-z0-9_.:-]", "_", text.strip())[:32]
    return code if LABEL_VALUE.fullmatch(code) else "other"


def stage_done(stage: str, seconds: float | None, kept: int, dropped: Iterable[str]) -> None:
    """One stage answer: records kept (outcome 'ok') and dropped (outcome = the reason code after 'stage:')."""
    metrics.inc("medpo_records_total", kept, stage=stage, outcome="ok")
    for code, n in Counter(d.partition(":")[2] or d for d in dropped).items():
        metrics.inc("medpo_records_total", n, stage=stage, outcome=_label(code))
    if seconds is not None:
        metrics.observe("medpo_stage_seconds", seconds, stage=stage)


def quarantined(reasons: Iterable[str]) -> None:
    """Records refused before the run started (bad data, images the processor cannot take), by reason."""
    for reason, n in Counter(_label(r.split("[")[0]) for r in reasons).items():
        metrics.inc("medpo_bad_records_total", n, reason=reason)


def queues(queues: Iterable, waiting: int, window: int) -> None:
    """Records in each queue between stages against its capacity (a full queue stops its producer), and
    the examples `waiting` for the learner against its `window` (batch_size x (1 + max_staleness))."""
    for q in queues:
        metrics.set("medpo_queue_depth", q.depth, queue=q.name)
        metrics.set("medpo_queue_capacity", q.capacity, queue=q.name)
    metrics.set("medpo_queue_depth", waiting, queue="learner")
    metrics.set("medpo_queue_capacity", window, queue="learner")


def weight_sync(seconds: float) -> None:
    """One push of the learner's weights into every rollout engine."""
    metrics.observe("medpo_weight_sync_seconds", seconds)


def logprob_mismatch(gap: float) -> None:
    """Max |vLLM - learner| log-prob gap on the last check (same weights: should be dtype noise)."""
    metrics.set("medpo_logprob_mismatch", gap)


def step_done(step: int, m: dict, staleness: list[int]) -> None:
    """A finished learner step: version, pairs, staleness of its samples, loss terms, reward accuracies."""
    metrics.set("medpo_policy_version", step, role="learner")
    metrics.inc("medpo_learner_steps_total")
    metrics.inc("medpo_pairs_trained_total", m["pairs"])
    for s in staleness:
        metrics.observe("medpo_sample_staleness", s)
    for key, term in LOSS_TERMS.items():
        if key in m:
            metrics.set("medpo_loss", float(m[key]), term=term)
    for key, pair in REWARD_ACCURACY.items():
        if key in m and math.isfinite(m[key]):
            metrics.set("medpo_reward_accuracy", float(m[key]), pair=pair)


_TOKEN_LABELS: set[str] = set()
MAX_TOKEN_LABELS = 64  # distinct token labels per driver; later new tokens count as "other"


def edit_tokens(counts: dict[str, dict[str, int]]) -> None:
    """Edited tokens pushed down / up in one step (training/edit_tokens.py), by token as a label: model
    text, so only a stripped identifier-like token is a label value, and at most MAX_TOKEN_LABELS of them."""
    for direction, by_token in counts.items():
        for text, n in by_token.items():
            label = _label(text) if text.strip() else "space"
            if label not in _TOKEN_LABELS:
                if len(_TOKEN_LABELS) >= MAX_TOKEN_LABELS:
                    label = "other"
                else:
                    _TOKEN_LABELS.add(label)
            metrics.inc("medpo_edit_tokens_total", n, direction=direction, token=label)


def probe(verdict: dict) -> None:
    """One guard probe (medpo_ray/guard.py): its scores, and whether the policy is worse than its warm start."""
    for key in ("edits_per_answer", "exact", "vqa_accuracy", "max_token_drop"):
        if verdict.get(key) is not None:
            metrics.set("medpo_probe", float(verdict[key]), metric=key)
    metrics.set("medpo_policy_regression", float(verdict["regressed"]))
    if verdict["regressed"]:
        metrics.inc("medpo_policy_regressions_total")


def checkpoint_written(unix_time: float) -> None:
    """The time of the last complete checkpoint (an alert fires when it grows old)."""
    metrics.set("medpo_checkpoint_timestamp_seconds", unix_time)
