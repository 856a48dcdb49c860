"""CPU weight-sync transport: buckets, headers, the push check, shared-memory clean-up."""
import os

import pytest
import torch

from medpo_ray.rollout.weight_sync import make_weight_sync
from medpo_ray.rollout.weight_sync.base import WeightManifest, WeightPush, WeightSyncError
from medpo_ray.rollout.weight_sync.nccl import TensorListSource, tensor_header
from medpo_ray.rollout.weight_sync.object_store import (
    ObjectStoreSync,
    iter_buckets,
    load_bucket,
    push_header,
    read_header,
)

pytestmark = pytest.mark.unit


class ModuleTarget:
    """A receiver that checks a push like the engine does, then loads it into a torch module."""

    def __init__(self, module):
        self.module = module
        self.manifest = WeightManifest({"module": {n: tuple(p.shape) for n, p in module.named_parameters()}})
        self.seen_paths = []

    def apply_push(self, push: WeightPush) -> dict:
        self.manifest.check(push_header(push))
        if push.transport == "shm":
            self.seen_paths = list(push.buckets)
            assert all(os.path.exists(p) for p in push.buckets)
        state = {n: t for b in push.buckets for n, t in load_bucket(b).items()}
        self.module.load_state_dict(state)
        return {"policy_version": push.version, "apply_s": 0.0}


def net():
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def test_buckets_respect_the_size_limit():
    tensors = [(f"t{i}", torch.zeros(256)) for i in range(10)]  # 1 KiB each
    buckets = list(iter_buckets(tensors + [("big", torch.zeros(4096))], bucket_bytes=3 * 1024))
    assert [len(b) for b in buckets] == [3, 3, 3, 1, 1]
    assert list(buckets[-1]) == ["big"]


def test_tied_tensors_are_shipped_under_both_names():
    w = torch.randn(4, 4)
    (bucket,) = iter_buckets([("embed", w), ("lm_head", w)], bucket_bytes=1 << 20)
    from safetensors.torch import save

    back = load_bucket(save(bucket))
    assert torch.equal(back["embed"], w) and torch.equal(back["lm_head"], w)


def test_header_is_read_without_the_data_and_garbage_is_refused(tmp_path):
    from safetensors.torch import save, save_file

    tensors = {"a": torch.zeros(2, 3), "b": torch.zeros(5, dtype=torch.bfloat16)}
    assert read_header(save(tensors)) == {"a": ("F32", (2, 3)), "b": ("BF16", (5,))}
    save_file(tensors, str(tmp_path / "x.safetensors"))
    assert read_header(str(tmp_path / "x.safetensors")) == read_header(save(tensors))
    with pytest.raises(WeightSyncError, match="not a safetensors bucket"):
        read_header(b"\x05\x00\x00\x00\x00\x00\x00\x00hello")
    with pytest.raises(WeightSyncError, match="appears in two buckets"):
        push_header(WeightPush(1, "bytes", (save(tensors), save({"a": torch.zeros(2, 3)}))))


def test_manifest_names_missing_unknown_misshaped_and_non_float_tensors():
    m = WeightManifest({"checkpoint": {"model.w": (4, 4), "lm_head.weight": (8, 4)},
                        "module": {"model.lm.w": (4, 4), "lm_head.weight": (8, 4)}})
    assert m.check({"model.w": ("F32", (4, 4)), "lm_head.weight": ("BF16", (8, 4))}) == "checkpoint"
    assert m.check({"model.lm.w": ("F32", (4, 4)), "lm_head.weight": ("F32", (8, 4))}) == "module"
    with pytest.raises(WeightSyncError, match=r"missing tensor\(s\): lm_head.weight"):
        m.check({"model.lm.w": ("F32", (4, 4))})
    with pytest.raises(WeightSyncError, match=r"misshaped tensor\(s\): lm_head.weight \[8, 5\] \(expected \[8, 4\]\)"):
        m.check({"model.lm.w": ("F32", (4, 4)), "lm_head.weight": ("F32", (8, 5))})
    with pytest.raises(WeightSyncError, match=r"unknown tensor\(s\): extra"):
        m.check({"model.lm.w": ("F32", (4, 4)), "lm_head.weight": ("F32", (8, 4)), "extra": ("F32", (1,))})
    with pytest.raises(WeightSyncError, match="non-float dtype"):
        m.check({"model.lm.w": ("I64", (4, 4)), "lm_head.weight": ("F32", (8, 4))})
    with pytest.raises(WeightSyncError, match="no tensors"):
        m.check({})


@pytest.mark.parametrize("transport", ["bytes", "shm"])
def test_sync_delivers_every_tensor_and_leaves_no_shared_memory(transport, tmp_path):
    src, dst = net(), net()
    target = ModuleTarget(dst)
    sync = make_weight_sync(transport, target, bucket_bytes=256, **({"shm_dir": str(tmp_path)}
                                                                   if transport == "shm" else {}))
    stats = sync.sync(src.named_parameters(), version=3)
    assert stats["policy_version"] == 3 and stats["buckets"] > 1
    assert stats["bytes"] == sum(p.numel() * 4 for p in src.parameters())
    for a, b in zip(src.parameters(), dst.parameters(), strict=True):
        assert torch.equal(a, b)
    assert list(tmp_path.iterdir()) == []


def test_refused_shm_push_is_cleaned_up_and_changes_nothing(tmp_path):
    src, dst = net(), net()
    before = [p.detach().clone() for p in dst.parameters()]
    sync = ObjectStoreSync(ModuleTarget(dst), transport="shm", shm_dir=str(tmp_path))
    named = [(n, p) for n, p in src.named_parameters() if n != "2.bias"]
    with pytest.raises(WeightSyncError, match="2.bias"):
        sync.sync(named, version=1)
    assert list(tmp_path.iterdir()) == []
    assert all(torch.equal(a, b) for a, b in zip(before, dst.parameters(), strict=True))


def test_unknown_transport_is_refused():
    with pytest.raises(ValueError, match="bytes, shm or nccl"):
        make_weight_sync("carrier-pigeon", None)


def test_nccl_source_declares_what_it_yields():
    items = [("a", torch.zeros(2, 3)), ("b", torch.zeros(4, dtype=torch.bfloat16))]
    src = TensorListSource()
    src.items = items
    assert [(m.name, m.dtype, m.shape) for m in src.metadata()] == [("a", torch.float32, (2, 3)),
                                                                    ("b", torch.bfloat16, (4,))]
    assert list(src) == items
    assert tensor_header(items) == {"a": ("F32", (2, 3)), "b": ("BF16", (4,))}
