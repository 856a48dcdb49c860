import json

import pytest

from medpo_ray.training.checkpoint import FORMAT, META, check_compatible, read_meta
from medpo_ray.training.errors import CheckpointError

pytestmark = pytest.mark.unit

NOW = {"format": FORMAT, "world_size": 2, "zero_stage": 1, "finetune": "full", "bf16": False, "micro_batch": 1,
       "batch_size": 4}


def test_an_incomplete_checkpoint_is_refused(tmp_path):
    (tmp_path / "rank_000").mkdir()  # ranks wrote their shards, rank 0 never wrote learner.json
    with pytest.raises(CheckpointError, match="not a complete learner checkpoint"):
        read_meta(tmp_path)
    (tmp_path / META).write_text("{truncated")
    with pytest.raises(CheckpointError, match="unreadable"):
        read_meta(tmp_path)
    (tmp_path / META).write_text(json.dumps(NOW))
    assert read_meta(tmp_path) == NOW


@pytest.mark.parametrize("key,value", [("world_size", 4), ("zero_stage", 3), ("finetune", "lora"),
                                       ("bf16", True), ("batch_size", 8), ("format", 99)])
def test_a_checkpoint_from_another_setup_names_the_setting(tmp_path, key, value):
    with pytest.raises(CheckpointError, match=key if key != "format" else "format 99"):
        check_compatible({**NOW, key: value}, NOW, tmp_path)
    check_compatible(dict(NOW), NOW, tmp_path)
