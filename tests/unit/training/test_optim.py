import json

import pytest
import torch

from medpo_ray.config import TrainConfig
from medpo_ray.training.optim import build_optimizer, build_scheduler, lr_factor

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("schedule,warmup", [("cosine", 0), ("cosine", 3), ("constant", 0), ("constant", 4)])
def test_schedule_matches_transformers(schedule, warmup):
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    total = 12
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = (get_cosine_schedule_with_warmup(opt, warmup, total) if schedule == "cosine"
           else get_constant_schedule_with_warmup(opt, warmup))
    want = []
    for _ in range(total + 2):
        want.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    assert [lr_factor(s, warmup, total, schedule) for s in range(total + 2)] == pytest.approx(want, abs=1e-12)


def test_scheduler_drives_adamw_and_its_state_is_plain_data():
    train = TrainConfig(lr=0.1, steps=4, warmup_steps=1, weight_decay=0.01, adam_betas=(0.8, 0.9), adam_eps=1e-6)
    p = torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer([p], train)
    sched = build_scheduler(opt, train)
    assert opt.param_groups[0]["betas"] == (0.8, 0.9) and opt.param_groups[0]["weight_decay"] == 0.01
    lrs = []
    for _ in range(4):
        lrs.append(sched.get_last_lr()[0])
        p.grad = torch.ones(3)
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.1 * lr_factor(s, 1, 4, "cosine") for s in range(4)])
    json.dumps(sched.state_dict())  # nothing but numbers: checkpoints store it as JSON
