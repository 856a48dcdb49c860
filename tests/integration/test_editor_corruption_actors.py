"""SpanEditor and CorruptionWorker actors on a real local Ray, over freshly synthesized embedded records."""
from dataclasses import replace

import numpy as np
import pytest
import ray

from actors.loopback import loopback_only
from medpo_ray.config import CorruptionConfig, CriticConfig
from medpo_ray.corruption import decode_image
from medpo_ray.data.lesions import LesionParams
from medpo_ray.data.sources.embedded import EmbeddedSource
from medpo_ray.data.synth import synthesize

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def local_ray():
    loopback_only()  # every listener of the test cluster on 127.0.0.1
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    out = tmp_path_factory.mktemp("embedded")
    synthesize(out, studies=6, seed=3, size=112, params=LesionParams.from_difficulty(0.5, 112))
    result = EmbeddedSource(out, task="report").load()
    assert not result.bad and len(result.records) == 6
    return result.records


def square_dilation(mask, r):
    """Reference region bound: every pixel within Chebyshev distance r of the mask (brute force)."""
    out = np.zeros_like(mask)
    p = np.pad(mask, r)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= p[dy:dy + mask.shape[0], dx:dx + mask.shape[1]]
    return out


def test_corruption_worker(local_ray, records):
    from actors.corruption import CorruptionWorker

    cfg = CorruptionConfig()
    worker = CorruptionWorker.remote(cfg)
    bad = [replace(records[0], record_id="broken", image=records[0].image[:40]),
           replace(records[1], record_id="misshapen", lesion_mask=records[2].image[:0] or b"\x89PNG")]
    meta, payload = ray.get(list(worker.corrupt.options(num_returns=2).remote(records + bad)))
    assert set(meta["bad"]) == {"broken", "misshapen"}
    assert meta["bad"]["broken"].startswith("image:") and meta["bad"]["misshapen"].startswith("lesion_mask:")
    assert [c.record_id for c in payload] == [r.record_id for r in records]
    for rec, out in zip(records, payload, strict=True):
        image, corrupted = decode_image(rec.image), decode_image(out.image)
        mask = decode_image(rec.lesion_mask) > 0
        assert corrupted.shape == image.shape and meta["notes"][rec.record_id] == out.note
        if mask.any():
            outside = ~square_dilation(mask, cfg.dilate_px)
            assert out.note["region"] == "mask" and out.note["mode"] == "inpaint"
            assert np.array_equal(corrupted[outside], image[outside]) and out.note["pixels_changed"] > 0
        else:
            assert out.note["region"] == "whole" and out.note["mode"] == "noise"
    # Deterministic by record id: a second worker makes the same bytes.
    again = ray.get(CorruptionWorker.remote(cfg).corrupt.options(num_returns=2).remote(records)[1])
    assert [c.image for c in again] == [c.image for c in payload]
    # Prepared ahead (beside the rollout): the same images and the same bad-record report, the cache
    # drained as they are taken; a prepared bad record is still reported by name.
    ahead = CorruptionWorker.remote(cfg)
    assert ray.get(ahead.prepare.remote(records[:3] + bad[:1])) == 4
    meta2, payload2 = ray.get(list(ahead.corrupt.options(num_returns=2).remote(records + bad)))
    assert meta2["bad"] == meta["bad"] and meta2["notes"] == meta["notes"]
    assert sorted((c.record_id, c.image) for c in payload2) == sorted((c.record_id, c.image) for c in payload)
    assert ray.get(ahead.prepare.remote([])) == 0


def test_span_editor(local_ray, records):
    from actors.span_editor import SpanEditor

    editor = SpanEditor.remote(CriticConfig(backend="reference"))
    # The truth (branch B: a counterfactual), the truth with sides swapped (branch A), and garbage.
    swap = {"left": "right", "right": "left"}
    wrong = [" ".join(swap.get(w, w) for w in r.target.split(" ")) for r in records[:3]]
    answers = [r.target for r in records[:3]] + wrong + ["%%% not a report %%%"]
    recs = records[:3] + records[:3] + records[3:4]
    meta, pairs = ray.get(list(editor.edit.options(num_returns=2).remote(recs, answers, 7)))
    counts = ray.get(editor.counts.remote())
    assert sum(counts.values()) == len(answers)
    assert counts.get("pairs_A", 0) >= 1 and counts.get("pairs_B", 0) >= 1
    assert meta.stage == "editor" and meta.dropped.get(records[3].record_id) == "unreadable"  # the critic's own code
    assert set(meta.kept) == {p.record_id for p in pairs} and set(meta.versions.values()) == {7}
    for p in pairs:
        assert p.policy_version == 7 and p.critic == "reference"
        assert p.spans_plus and p.spans_minus
        # Branch A corrects y0 (y- = y0), branch B makes a counterfactual of it (y+ = y0).
        assert (p.y_minus if p.branch == "A" else p.y_plus) in answers and p.y_plus != p.y_minus
    assert ray.get(editor.counts.remote()) == counts


def test_the_corruption_stage_drops_what_the_learner_would_refuse(local_ray, records, pipeline_setup):
    # Given the policy's directory, the stage runs the learner's collation on each finished pair: a pair
    # the learner would leave out of its step is dropped here, by field, so the driver replaces it before
    # the step (which then trains exactly train.batch_size pairs) instead of the learner losing it.
    from actors.corruption import CorruptionWorker
    from medpo_ray.critics.base import CriticVerdict, Edit
    from medpo_ray.editing.pairs import build_pair

    rec = records[0]
    y0 = rec.target
    word = y0.split()[-1]
    pairs = [build_pair(replace(rec, record_id=f"p{i}"), y0,
                        CriticVerdict("wrong", (Edit(word, new, y0.rindex(word)),), "test"), 0)
             for i, new in enumerate(["x.", "<|image_pad|>"])]  # the second spells the model's image token
    worker = CorruptionWorker.remote(CorruptionConfig(), pipeline_setup.model_dir)
    ids = [replace(rec, record_id=p.record_id) for p in pairs]
    outcome, out = ray.get(list(worker.examples.options(num_returns=2).remote(ids, pairs)))
    assert outcome.kept == ("p0",) and [p.record_id for p in out] == ["p0"]
    assert outcome.dropped["p1"].startswith("y_plus: the response contains an image/vision special token")
    assert out[0].image == rec.image and out[0].corrupt_image  # x and x~ added to the one pair type
