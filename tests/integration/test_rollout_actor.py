"""A real vLLM engine inside a Ray actor: image generation, weight push through the object store,
vLLM vs transformers log-probs after the push, and a refused push that leaves the old weights serving."""
import io

import numpy as np
import pytest
import ray
import torch
from PIL import Image

from actors.loopback import loopback_only
from medpo_ray.rollout.engine import RolloutRequest, SamplingSpec
from medpo_ray.rollout.weight_sync.base import WeightSyncError
from medpo_ray.rollout.weight_sync.object_store import ObjectStoreSync

pytestmark = pytest.mark.integration

PROMPT = "Write the findings and impression of a radiology report for this image."


def encoded(seed: int, fmt: str = "PNG") -> bytes:
    a = (np.random.default_rng(seed).random((112, 112, 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt)
    return buf.getvalue()


REQUESTS = [RolloutRequest("png", encoded(0), PROMPT), RolloutRequest("jpeg", encoded(1, "JPEG"), PROMPT),
            RolloutRequest("vqa", encoded(2), "Is there a nodule in the left lung?")]
GREEDY = SamplingSpec(max_tokens=12)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from medpo_ray.models.corpus import grammar_texts
    from medpo_ray.models.factory import build_model
    from medpo_ray.models.presets import get_preset

    out = tmp_path_factory.mktemp("policy")
    build_model(out, get_preset("tiny"), grammar_texts(studies=300), seed=0)
    return out


@pytest.fixture(scope="module")
def actor(model_dir):
    from actors.rollout import RolloutActor

    loopback_only()  # every listener of the test cluster on 127.0.0.1
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    # Every layer packed, as a model with bigger layers than the tiny one is served (the pipeline tests
    # cover the tiny model's unpacked layers, checking vLLM's log-probs after every sync).
    handle = RolloutActor.options(num_cpus=1).remote(str(model_dir), max_model_len=256, unpacked_linear_bytes=0)
    yield handle
    ray.shutdown()


class ActorTarget:
    """One rollout actor as ObjectStoreSync's push target: the push goes into the object store once."""

    def __init__(self, actor):
        self.actor = actor

    def apply_push(self, push):
        return ray.get(self.actor.apply_push.remote(ray.put(push)), timeout=300)


@pytest.fixture(scope="module")
def group(actor):
    return ActorTarget(actor)


@pytest.fixture(scope="module")
def learner(model_dir):
    from medpo_ray.models.loading import load_policy, load_processor

    return load_policy(model_dir), load_processor(model_dir)


def generate(actor, requests=REQUESTS, spec=GREEDY):
    return ray.get(actor.generate.remote(requests, spec))


def test_generates_from_images_and_refuses_bad_items_by_name(actor, learner):
    _, processor = learner
    bad = [RolloutRequest("broken", b"\x89PNG\r\n\x1a\n-cut-", PROMPT),
           RolloutRequest("too-long", encoded(3), "lung " * 400)]
    res = generate(actor, REQUESTS + bad, SamplingSpec(n=2, temperature=1.0, max_tokens=12, seed=7))
    assert sorted((b.record_id, b.field) for b in res.bad) == [("broken", "image"), ("too-long", "prompt")]
    assert "context holds 256" in next(b.reason for b in res.bad if b.record_id == "too-long")
    assert sorted((r.record_id, r.sample) for r in res.rollouts) == sorted(
        (q.record_id, k) for q in REQUESTS for k in range(2))
    forbidden = {processor.tokenizer.convert_tokens_to_ids(t) for t in
                 ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>")}
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for r in res.rollouts:
        assert r.policy_version == 0 and len(r.token_ids) == len(r.logprobs) > 0
        assert all(lp <= 0 for lp in r.logprobs)
        assert not forbidden & set(r.token_ids)
        assert max(r.token_ids) < len(processor.tokenizer)
        assert r.prompt_token_ids.count(image_id) == 16
    # Seeds are per (item, sample): the same call again gives the same samples; the two samples differ.
    again = generate(actor, REQUESTS, SamplingSpec(n=2, temperature=1.0, max_tokens=12, seed=7))
    by_key = {(r.record_id, r.sample): r.token_ids for r in res.rollouts}
    assert all(by_key[(r.record_id, r.sample)] == r.token_ids for r in again.rollouts)
    assert any(by_key[(q.record_id, 0)] != by_key[(q.record_id, 1)] for q in REQUESTS)


def test_push_changes_outputs_and_logprobs_match_transformers(actor, group, learner):
    from medpo_ray.rollout.logprob_check import logprob_mismatch

    model, processor = learner
    before = generate(actor)
    png, jpeg = before.rollouts[0], before.rollouts[1]
    assert png.prompt_token_ids == jpeg.prompt_token_ids and png.logprobs != jpeg.logprobs  # the image counts
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    stats = ObjectStoreSync(group).sync(model.named_parameters(), version=1)
    assert stats["policy_version"] == 1 and stats["tensors"] == len(list(model.parameters()))
    after = generate(actor)
    assert all(r.policy_version == 1 for r in after.rollouts)
    assert any(a.token_ids != b.token_ids for a, b in zip(before.rollouts, after.rollouts, strict=True))
    gap = logprob_mismatch(model, processor, after.rollouts, {q.record_id: q.image for q in REQUESTS},
                           {q.record_id: q.prompt for q in REQUESTS})
    assert gap["prompt_mismatches"] == 0 and gap["tokens"] == sum(len(r.token_ids) for r in after.rollouts)
    assert gap["logprob_max_abs_diff"] < 1e-4
    # The first push verified the copy reload against vLLM's; the next one takes it, and agrees as well.
    assert stats["reload_path"] == "layerwise"
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.9)
    stats = ObjectStoreSync(group).sync(model.named_parameters(), version=2)
    assert stats["reload_path"] == "inplace" and stats["policy_version"] == 2
    again = generate(actor)
    assert any(a.logprobs != b.logprobs for a, b in zip(after.rollouts, again.rollouts, strict=True))
    gap = logprob_mismatch(model, processor, again.rollouts, {q.record_id: q.image for q in REQUESTS},
                           {q.record_id: q.prompt for q in REQUESTS})
    assert gap["prompt_mismatches"] == 0 and gap["logprob_max_abs_diff"] < 1e-4


def test_refused_push_leaves_the_old_weights_serving(actor, group, learner):
    model, _ = learner
    serving = generate(actor)
    version = ray.get(actor.policy_version.remote())
    named = {n: p.detach() * 3.0 for n, p in model.named_parameters()}
    missing = {n: t for n, t in named.items() if n != "lm_head.weight"}
    misshaped = {**named, "model.visual.merger.mlp.2.bias": torch.zeros(7)}
    sync = ObjectStoreSync(group)
    with pytest.raises(WeightSyncError, match=r"missing tensor\(s\): lm_head.weight"):
        sync.sync(missing.items(), version=version + 1)
    with pytest.raises(WeightSyncError, match=r"misshaped tensor\(s\): model.visual.merger.mlp.2.bias \[7\]"):
        sync.sync(misshaped.items(), version=version + 1)
    with pytest.raises(WeightSyncError, match=r"non-finite values in 1 tensor\(s\): lm_head.weight"):
        sync.sync({**named, "lm_head.weight": named["lm_head.weight"] * float("nan")}.items(), version=version + 1)
    still = generate(actor)
    assert ray.get(actor.policy_version.remote()) == version
    assert [r.token_ids for r in still.rollouts] == [r.token_ids for r in serving.rollouts]
    assert [r.logprobs for r in still.rollouts] == [r.logprobs for r in serving.rollouts]


def test_frozen_tensors_the_engine_already_holds_are_skipped(actor, group, learner):
    from medpo_ray.rollout.logprob_check import logprob_mismatch

    model, processor = learner
    sync = ObjectStoreSync(group)
    version = ray.get(actor.policy_version.remote())
    named = dict(model.named_parameters())
    vision = {n for n in named if n.startswith("model.visual.")}
    # A fresh engine (or one on vLLM's layer-wise reload) loads every tensor whatever the marks say.
    sync.sync(named.items(), version=version + 1)
    with torch.no_grad():
        for n, p in named.items():
            if n not in vision:
                p.mul_(1.02)
    # The marked-frozen tensors carry garbage here: an engine that holds them skips them, so what it
    # serves must be the learner's model with its real vision tower, and its vision kernels stay packed.
    garbage = {n: (p.detach() * 3.0 if n in vision else p) for n, p in named.items()}
    stats = sync.sync(garbage.items(), version=version + 2, frozen=vision)
    assert stats["reload_path"] == "inplace" and stats["skipped_frozen"] == len(vision)
    served = generate(actor)
    gap = logprob_mismatch(model, processor, served.rollouts, {q.record_id: q.image for q in REQUESTS},
                           {q.record_id: q.prompt for q in REQUESTS})
    assert gap["prompt_mismatches"] == 0 and gap["logprob_max_abs_diff"] < 1e-4
    full = sync.sync(named.items(), version=version + 3)  # unmarked: every layer is written and re-packed
    assert full["skipped_frozen"] == 0 and 0 < stats["layers_repacked"] < full["layers_repacked"]


def test_an_engine_whose_load_failed_refuses_rollouts_until_a_load_succeeds(actor, learner):
    from types import SimpleNamespace

    from medpo_ray.rollout.weight_sync.flat import pack_flat

    model, _ = learner
    version = ray.get(actor.policy_version.remote())
    named = {n: p.detach() for n, p in model.named_parameters()}
    bad = pack_flat({**named, "lm_head.weight": torch.zeros(3)}.items())
    with pytest.raises(ray.exceptions.RayTaskError, match=r"misshaped tensor\(s\): lm_head.weight"):
        ray.get(actor.sync_from.remote(bad, version + 1))
    # The pipeline queues the next step's rollouts behind a load without waiting for it: after a failed
    # load they must stop the run naming it, not run on the old weights.
    records = [SimpleNamespace(record_id=q.record_id, image=q.image, prompt=q.prompt) for q in REQUESTS[:1]]
    with pytest.raises(ray.exceptions.RayTaskError,
                       match=f"failed to load policy version {version + 1}: WeightSyncError"):
        ray.get(actor.rollout.remote(records, GREEDY))
    stats = ray.get(actor.sync_from.remote(pack_flat(named.items()), version + 1))
    assert stats["policy_version"] == version + 1 and not stats.get("already")
    meta, result = ray.get(actor.rollout.remote(records, GREEDY))
    assert meta.versions == {"png": version + 1} and [r.record_id for r in result.rollouts] == ["png"]


def test_the_multiprocess_engine_generates_loads_pushes_and_matches_transformers(model_dir, actor, learner):
    # Every GPU run serves with vLLM's multiprocess engine (the engine core in its own process, RPC
    # arguments msgpack-encoded); the pipeline's own path: a flat bucket through the actor's sync_from.
    from actors.rollout import RolloutActor
    from medpo_ray.rollout.logprob_check import logprob_mismatch
    from medpo_ray.rollout.weight_sync.flat import pack_flat

    model, processor = learner
    mp = RolloutActor.options(num_cpus=1, runtime_env={"env_vars": {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}}).remote(
        str(model_dir), max_model_len=256)
    try:
        assert ray.get(mp.__ray_call__.remote(lambda self: self.engine.multiprocess), timeout=600)
        before = generate(mp)
        assert all(r.policy_version == 0 for r in before.rollouts)
        for version, scale in ((1, 1.05), (2, 0.95)):  # vLLM's layer-wise reload, then the copy path
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(scale)
            stats = ray.get(mp.sync_from.remote(pack_flat(model.named_parameters()), version), timeout=300)
            assert stats["policy_version"] == version
            served = generate(mp)
            assert all(r.policy_version == version for r in served.rollouts)
            gap = logprob_mismatch(model, processor, served.rollouts, {q.record_id: q.image for q in REQUESTS},
                                   {q.record_id: q.prompt for q in REQUESTS})
            assert gap["prompt_mismatches"] == 0 and gap["logprob_max_abs_diff"] < 1e-4, (version, gap)
        assert stats["reload_path"] == "inplace"
    finally:
        ray.kill(mp)
