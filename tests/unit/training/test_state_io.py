import enum
import json
import random

import numpy as np
import pytest
import torch

from medpo_ray.training.errors import CheckpointError
from medpo_ray.training.state_io import (
    decode_state,
    encode_state,
    load_state,
    rng_state,
    save_state,
    set_rng_state,
)

pytestmark = pytest.mark.unit


class Stage(enum.IntEnum):
    TWO = 2


class Opaque:
    """Stands in for DeepSpeed's loss scaler: not data, so it must come from the live state."""


def test_roundtrip_keeps_types_keys_and_tensors(tmp_path):
    state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(4, 2).t()}},  # a non-contiguous view
             "param_groups": [{"betas": (0.9, 0.999), "params": [0, 1], "foreach": None, "lr": 1e-3}],
             "bf16": torch.ones(3, dtype=torch.bfloat16), "stage": Stage.TWO, "flag": True, "name": "x",
             "np": np.arange(5, dtype=np.uint32), "inf": float("inf")}
    save_state(tmp_path / "opt", state)
    json.loads((tmp_path / "opt.json").read_text())
    back = load_state(tmp_path / "opt")
    assert list(back["state"]) == [0] and back["param_groups"][0]["betas"] == (0.9, 0.999)
    assert torch.equal(back["state"][0]["exp_avg"], state["state"][0]["exp_avg"])
    assert back["bf16"].dtype == torch.bfloat16 and back["stage"] == 2 and type(back["stage"]) is int
    assert back["np"].dtype == np.uint32 and back["np"].tolist() == [0, 1, 2, 3, 4]
    assert back["flag"] is True and back["inf"] == float("inf") and back["param_groups"][0]["foreach"] is None


def test_optimizer_state_roundtrip_continues_identically(tmp_path):
    def make():
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.randn(5))
        return p, torch.optim.AdamW([p], lr=0.1)

    p, opt = make()
    for _ in range(2):
        p.grad = p.detach() * 2
        opt.step()
    save_state(tmp_path / "o", opt.state_dict())
    q, opt2 = make()
    with torch.no_grad():
        q.copy_(p)
    opt2.load_state_dict(load_state(tmp_path / "o", opt2.state_dict()))
    for param, o in ((p, opt), (q, opt2)):
        param.grad = param.detach() * 2
        o.step()
    assert torch.equal(p, q)


def test_live_placeholders_come_from_the_live_state():
    skeleton, tensors = encode_state({"scaler": Opaque(), "n": [1, Opaque()]})
    live = {"scaler": Opaque(), "n": [1, Opaque()]}
    back = decode_state(skeleton, tensors, live)
    assert back["scaler"] is live["scaler"] and back["n"][1] is live["n"][1]
    with pytest.raises(CheckpointError, match="Opaque"):
        decode_state(skeleton, tensors, {"n": [1]})


def test_missing_or_corrupt_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="missing"):
        load_state(tmp_path / "nothing")
    save_state(tmp_path / "s", {"a": torch.zeros(2)})
    (tmp_path / "s.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_state(tmp_path / "s")


def test_rng_state_roundtrip_replays_every_generator(tmp_path):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    save_state(tmp_path / "rng", rng_state())
    first = (random.random(), np.random.rand(), torch.rand(2))
    set_rng_state(load_state(tmp_path / "rng"))
    again = (random.random(), np.random.rand(), torch.rand(2))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])
