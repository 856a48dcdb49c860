import os

import numpy as np
import pytest
import torch

from medpo_ray.rollout.weight_sync.base import WeightSyncError
from medpo_ray.rollout.weight_sync.flat import unpack_flat
from medpo_ray.rollout.weight_sync.shared_buffer import SharedWeightsReader, SharedWeightsWriter, shm_room

pytestmark = pytest.mark.unit


def test_writer_rewrites_one_file_in_place_and_the_reader_sees_each_write(tmp_path):
    writer = SharedWeightsWriter(str(tmp_path), tag="t")
    reader = SharedWeightsReader()
    a, b = torch.randn(5, 3), torch.randn(7, dtype=torch.bfloat16)
    first = writer.write([("a", a), ("b", b)], frozen=["b"])
    got = dict(unpack_flat(reader.open(first)))
    assert torch.equal(got["a"], a) and torch.equal(got["b"], b) and first.frozen == {"b"}
    assert reader.open(first).data.ctypes.data % 64 == 0
    second = writer.write([("a", a * 2), ("b", b)])
    assert second.seq == first.seq + 1 and second.path == first.path and os.listdir(tmp_path) == ["medpo-weights-t.bin"]
    assert torch.equal(dict(unpack_flat(reader.open(second)))["a"], a * 2)  # the same mapping, new values
    # The descriptor of the first write no longer matches what the file holds: refused, by path.
    with pytest.raises(WeightSyncError, match="holds write 2, not 1: it was rewritten"):
        reader.open(first)
    # Another layout (size) re-creates the file; the reader re-maps it.
    third = writer.write([("a", torch.ones(100))])
    assert torch.equal(dict(unpack_flat(reader.open(third)))["a"], torch.ones(100))
    writer.close()
    assert not os.listdir(tmp_path)
    with pytest.raises(WeightSyncError, match="cannot be mapped here"):
        SharedWeightsReader().open(third)


def test_shm_room_is_false_for_a_missing_or_full_directory(tmp_path):
    assert shm_room(1 << 20, str(tmp_path))
    assert not shm_room(1 << 20, str(tmp_path / "missing"))
    assert not shm_room(1 << 62, str(tmp_path))


def test_pack_into_a_buffer_of_the_wrong_size_is_refused():
    from medpo_ray.rollout.weight_sync.flat import pack_flat

    with pytest.raises(WeightSyncError, match="target buffer holds 8 bytes, the tensors need 64"):
        pack_flat([("a", torch.zeros(4))], alloc=lambda n: np.zeros(8, np.uint8))
