"""CPU weight-sync transports: flat buffer, buckets, headers, the push check, shared-memory clean-up."""
import os

import numpy as np
import pytest
import torch

from medpo_ray.rollout.weight_sync.base import WeightManifest, WeightPush, WeightSyncError
from medpo_ray.rollout.weight_sync.flat import FlatBucket, pack_flat, unpack_flat
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
        state = {n: t for b in push.buckets for n, t in load_bucket(b)}
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

    back = dict(load_bucket(save(bucket)))
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


@pytest.mark.parametrize("transport", ["flat", "bytes", "shm"])
def test_sync_delivers_every_tensor_and_leaves_no_shared_memory(transport, tmp_path):
    src, dst = net(), net()
    target = ModuleTarget(dst)
    sync = ObjectStoreSync(target, transport=transport, bucket_bytes=256,
                           **({"shm_dir": str(tmp_path)} if transport == "shm" else {}))
    stats = sync.sync(src.named_parameters(), version=3)
    assert stats["policy_version"] == 3 and stats["buckets"] == (1 if transport == "flat" else 4)
    # flat: every tensor starts on a 64-byte boundary (16*8+16+4*16+4 floats -> 8 aligned slots)
    payload = sum(p.numel() * 4 for p in src.parameters())
    assert stats["bytes"] == (sum(-(-p.numel() * 4 // 64) * 64 for p in src.parameters())
                              if transport == "flat" else payload)
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
    with pytest.raises(ValueError, match="transport must be one of"):
        ObjectStoreSync(None, transport="carrier-pigeon")


def test_flat_bucket_crosses_vllms_multiprocess_serializer_only_in_wire_form(monkeypatch):
    # collective_rpc to a multiprocess engine goes through vLLM's own msgpack encoder, untyped: the raw
    # bucket arrives as a dict whose buffer is a bare triple (what made every multiprocess push fail).
    from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder

    import medpo_ray.rollout.weight_sync.flat as flat

    monkeypatch.setattr(flat, "WIRE_SEGMENT", 64)  # several segments, as a >512 MiB push would have
    src = net()
    bucket = pack_flat(src.named_parameters(), frozen=["0.bias"])

    def through_vllm(obj):
        return MsgpackDecoder().decode(MsgpackEncoder().encode(obj))

    with pytest.raises(WeightSyncError):
        FlatBucket.from_wire(through_vllm(bucket))  # what the worker does with a dict
    arrived = through_vllm(bucket.wire())
    back = FlatBucket.from_wire(arrived)
    assert back.header == bucket.header and back.frozen == {"0.bias"}
    loaded = dict(load_bucket(back))
    assert all(torch.equal(loaded[n], p) for n, p in src.named_parameters())


def test_flat_bucket_round_trips_every_dtype_as_views_of_one_buffer():
    w = torch.randn(5, 3)
    items = [("w", w), ("tied", w), ("half", torch.randn(7, dtype=torch.bfloat16)),
             ("scalar", torch.tensor(2.5)), ("empty", torch.zeros(0, 4)), ("strided", torch.randn(4, 6)[:, ::2])]
    bucket = pack_flat(items, frozen=["half", "not-in-the-push"])
    assert bucket.frozen == {"half"}  # only names the bucket holds can be skipped by an engine
    assert bucket.metas() == {"w": ("F32", (5, 3)), "tied": ("F32", (5, 3)), "half": ("BF16", (7,)),
                              "scalar": ("F32", ()), "empty": ("F32", (0, 4)), "strided": ("F32", (4, 3))}
    back = unpack_flat(bucket)
    assert [n for n, _ in back] == [n for n, _ in items]
    for (_, a), (_, b) in zip(items, back, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    base = bucket.data.ctypes.data
    assert all((t.data_ptr() - base) % 64 == 0 and base <= t.data_ptr() < base + bucket.data.nbytes
               for _, t in back if t.numel())
    # What the Ray object store hands a reader: a read-only array. Unpacking it copies nothing.
    frozen = bucket.data.copy()
    frozen.flags.writeable = False
    again = unpack_flat(FlatBucket(bucket.header, frozen))
    assert torch.equal(dict(again)["half"], items[2][1])


def test_flat_bucket_that_does_not_fit_its_buffer_is_refused_by_name():
    bucket = pack_flat([("a", torch.zeros(4)), ("b", torch.zeros(16))])
    short = FlatBucket(bucket.header, bucket.data[:64])
    with pytest.raises(WeightSyncError, match=r"'b' \(F32 \[16\] at byte 64\) does not fit the 64-byte"):
        unpack_flat(short)
    with pytest.raises(WeightSyncError, match="unknown dtype 'Q8'"):
        unpack_flat(FlatBucket((("a", "Q8", (4,), 0),), bucket.data))
    with pytest.raises(WeightSyncError, match="1-D uint8"):
        unpack_flat(FlatBucket(bucket.header, np.zeros(8, dtype=np.float32)))
    with pytest.raises(WeightSyncError, match="'a' appears twice"):
        FlatBucket(bucket.header + bucket.header[:1], bucket.data).metas()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_finite_check_refuses_nan_and_inf_but_not_a_sum_that_overflows(dtype):
    from medpo_ray.rollout.worker_ext import _all_finite

    t = torch.randn(1000).to(dtype)
    assert _all_finite(t)
    t[:10] = 3e38  # finite values whose sum overflows: the exact check decides
    assert _all_finite(t)
    for bad in (float("nan"), float("inf"), -float("inf")):
        u = t.clone()
        u[500] = bad
        assert not _all_finite(u)


def test_a_partial_push_may_leave_out_only_names_the_model_has():
    src = net()
    m = WeightManifest({"module": {n: tuple(p.shape) for n, p in src.named_parameters()}})
    kept = [(n, p) for n, p in src.named_parameters() if n != "0.weight"]
    bucket = pack_flat(kept, omitted=["0.weight", "2.bias"])  # a name it carries is not omitted
    assert bucket.omitted == {"0.weight"}
    with pytest.raises(WeightSyncError, match=r"1 missing tensor\(s\): 0.weight"):
        m.check(bucket.metas())
    assert m.check(bucket.metas(), bucket.omitted) == "module"
    with pytest.raises(WeightSyncError, match=r"omitted name\(s\) the model does not have: visual.x"):
        m.check(bucket.metas(), bucket.omitted | {"visual.x"})
    assert FlatBucket.from_wire(bucket.wire()).omitted == {"0.weight"}
