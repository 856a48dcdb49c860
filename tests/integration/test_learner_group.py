"""The DeepSpeed learner group on a local Ray cluster: 2 ranks (gloo, CPU) on the tiny policy and real
minimal-edit pairs, checked against a plain single-process torch run of the same global batch."""
import dataclasses

import pytest
import ray
import torch

from actors.learner import LearnerGroup
from actors.loopback import loopback_only
from medpo_ray.config import LossConfig, TrainConfig
from medpo_ray.rollout.weight_sync.flat import unpack_flat
from medpo_ray.training import LearnerFailed
from tests.unit.training.examples import build_tiny_model, make_examples

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = 3
LOSS = LossConfig()


@pytest.fixture(scope="module")
def local_ray():
    loopback_only()  # every listener of the test cluster on 127.0.0.1
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("policy") / "tiny")


@pytest.fixture(scope="module")
def batch():
    return make_examples(4)


def train_config(**kw) -> TrainConfig:
    # 2 ranks x micro-batch 1 x 2 accumulation steps = global batch 4; a 10-step cosine schedule.
    return TrainConfig(**{"batch_size": 4, "micro_batch": 1, "num_learners": 2, "cpus_per_rank": 1, "lr": 1e-3,
                          "steps": 10, "grad_clip": 1.0, **kw})


def torch_reference(model_dir, train: TrainConfig, batch, steps: int) -> tuple[dict, list, list, object]:
    """Plain PyTorch in one process over the same global batch: (state, losses, grad norms, model).

    It accumulates gradients over micro-batches of `train.micro_batch` examples, as the ranks do: one
    forward over the whole batch pads rows differently, and Adam turns that fp32 noise in near-zero
    gradients into parameter differences of ~3e-5 after 3 steps (measured), which would hide real bugs.
    """
    from medpo_ray.losses import fire_mpo_loss
    from medpo_ray.models.loading import load_policy, load_processor, vision_token_ids
    from medpo_ray.training.collate import collate
    from medpo_ray.training.finetune import prepare_policy
    from medpo_ray.training.learner import seed_everything
    from medpo_ray.training.optim import build_optimizer, build_scheduler

    model = load_policy(model_dir)
    ref = load_policy(model_dir).requires_grad_(False) if train.finetune == "full" else None
    seed_everything(0)
    policy = prepare_policy(model, train).train()
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = build_optimizer(params, train)
    sched = build_scheduler(opt, train)
    processor, vision = load_processor(model_dir), vision_token_ids(model_dir)
    m = train.micro_batch
    micro = [collate(batch[i:i + m], processor, LOSS, vision, model.config.image_token_id)
             for i in range(0, len(batch), m)]
    losses, norms = [], []
    for _ in range(steps):
        opt.zero_grad()
        total = 0.0
        for c in micro:
            with torch.no_grad():
                if ref is None:
                    with policy.disable_adapter():
                        ref_logits = policy(**c.inputs).logits
                else:
                    ref_logits = ref(**c.inputs).logits
            loss, _ = fire_mpo_loss(policy(**c.inputs).logits, ref_logits, c.batch, LOSS)
            (loss / len(micro)).backward()
            total += float(loss.detach()) / len(micro)
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, train.grad_clip)))
        opt.step()
        sched.step()
        losses.append(total)
    return {k: v.detach().clone() for k, v in policy.state_dict().items()}, losses, norms, policy


def assert_close_states(got: dict, want: dict, atol: float):
    assert got.keys() == want.keys()
    worst = max((got[k] - want[k]).abs().max().item() for k in want)
    assert worst <= atol, f"max |diff| {worst:.2e} over {atol:.0e}"


def test_zero1_full_finetune_matches_single_process_and_resumes_exactly(local_ray, model_dir, batch, tmp_path):
    train = train_config(zero_stage=1, finetune="full")
    group = LearnerGroup(model_dir, train, LOSS)
    metrics = []
    for step in range(STEPS):
        if step == STEPS - 1:
            group.save_checkpoint(tmp_path / "ckpt")
        metrics.append(group.train_step(batch))
    states = group.state_dicts()
    weights_ref, summary = group.export_weights()
    weights = dict(unpack_flat(ray.get(weights_ref)))
    group.shutdown()

    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all(m["examples"] == 4 and m["bad"] == [] for m in metrics)
    assert sorted(metrics[0]["trained_ids"]) == sorted(ex.record_id for ex in batch)
    assert metrics[-1]["loss"] < metrics[0]["loss"] and metrics[-1]["delta_pref"] > 0
    for k in states[0]:  # data-parallel replicas after the all-gather: bit for bit the same
        assert torch.equal(states[0][k], states[1][k]), k
    assert summary["tensors"] == len(weights) and weights.keys() == states[0].keys()
    assert all(torch.equal(weights[k], states[0][k]) for k in weights)

    want, losses, norms, _ = torch_reference(model_dir, train, batch, STEPS)
    assert [m["loss"] for m in metrics] == pytest.approx(losses, rel=1e-5, abs=1e-6)
    assert [m["grad_norm"] for m in metrics] == pytest.approx(norms, rel=1e-4)
    assert_close_states(states[0], want, atol=1e-6)

    resumed = LearnerGroup(model_dir, train, LOSS)
    assert resumed.load_checkpoint(tmp_path / "ckpt")["step"] == STEPS - 1
    again = resumed.train_step(batch)
    assert again["step"] == STEPS and again["loss"] == metrics[-1]["loss"] and again["lr"] == metrics[-1]["lr"]
    for k, v in resumed.state_dicts()[0].items():
        assert torch.equal(v, states[0][k]), k

    ray.kill(resumed.ranks[1])
    with pytest.raises(LearnerFailed) as failed:
        resumed.train_step(batch)
    assert failed.value.rank == 1 and resumed.ranks == []


def test_zero3_lora_trains_only_adapters_and_keeps_the_reference(local_ray, model_dir, batch, tmp_path):
    # micro-batch 2: ZeRO-3 gathers parameters module by module on every forward; accumulation is the
    # ZeRO-1 test's business.
    train = train_config(zero_stage=3, finetune="lora", lora_r=8, lora_alpha=16, lora_dropout=0.0, micro_batch=2)
    group = LearnerGroup(model_dir, train, LOSS)
    before = group.state_dicts()[0]
    scores0 = group.score(batch)
    metrics = [group.train_step(batch)]
    group.save_checkpoint(tmp_path / "ckpt")
    metrics.append(group.train_step(batch))
    scores1 = group.score(batch)
    states = group.state_dicts()
    weights = dict(unpack_flat(ray.get(group.export_weights()[0])))
    group.shutdown()

    changed = {k for k in before if not torch.equal(before[k], states[0][k])}
    assert changed and all(".lora_" in k for k in changed)
    assert any(".lora_B." in k for k in changed)  # lora_B starts at zero: it moved
    assert scores1["reference"] == scores0["reference"]  # adapters disabled = the untouched base model
    margin = [(p[0] - r[0]) - (p[1] - r[1]) for p, r in zip(scores1["policy"], scores1["reference"], strict=True)]
    assert sum(margin) / len(margin) > 0  # y+ gained on y- against the reference
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k

    want, losses, norms, policy = torch_reference(model_dir, train, batch, 2)
    assert [m["loss"] for m in metrics] == pytest.approx(losses, rel=1e-5, abs=1e-6)
    assert [m["grad_norm"] for m in metrics] == pytest.approx(norms, rel=1e-4)
    assert_close_states(states[0], want, atol=1e-6)
    merged = policy.merge_and_unload().state_dict()  # peft's own merge, as the independent reference
    assert_close_states(weights, merged, atol=2e-5)

    resumed = LearnerGroup(model_dir, train, LOSS)
    resumed.load_checkpoint(tmp_path / "ckpt")
    again = resumed.train_step(batch)
    final = resumed.state_dicts()[0]
    # A micro-batch left empty by bad input on one rank: every rank skips the step together, nothing hangs.
    broken = [*batch[:2], *(dataclasses.replace(ex, image=b"not an image") for ex in batch[2:])]
    skipped = resumed.train_step(broken)
    unchanged = resumed.state_dicts()[0]
    resumed.shutdown()
    assert again["loss"] == metrics[-1]["loss"]
    for k in states[0]:
        assert torch.equal(final[k], states[0][k]), k
    assert skipped["skipped_step"] == 1 and skipped["trained_ids"] == [] and skipped["step"] == 2
    assert len(skipped["bad"]) == 2 and batch[3].record_id in skipped["bad"][1] and "'image'" in skipped["bad"][1]
    assert all(torch.equal(unchanged[k], final[k]) for k in final)
