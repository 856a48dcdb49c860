"""`medpo-ray train` refuses what it cannot run with one clear line, before starting Ray: a mistyped or
out-of-range setting, a training split that is empty or smaller than one step, a metrics port in use."""
from __future__ import annotations

import io
import socket

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from driver.cli import main
from tests.integration.promstack import REPO

pytestmark = pytest.mark.integration


def _train_fails(capsys, *argv: str) -> str:
    """Run `medpo-ray train` expecting exit status 2; its stderr (no traceback in it)."""
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def _vqa_parquet(folder, rows: int) -> None:
    """An HF-style VQA shard with `rows` valid questions about one gray image."""
    buf = io.BytesIO()
    Image.new("L", (64, 64), 128).save(buf, format="PNG")
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"image": pa.array([{"bytes": buf.getvalue(), "path": None}] * rows, type=image),
                      "question": pa.array([f"is there a lesion {i}?" for i in range(rows)], type=pa.string()),
                      "answer": pa.array(["no"] * rows, type=pa.string())})
    folder.mkdir()
    pq.write_table(table, folder / "train-00000-of-00001.parquet")


@pytest.mark.parametrize(("override", "named"), [("train.stepz=3", "train.stepz: unknown key"),
                                                 ("train.max_staleness=-1", "train.max_staleness"),
                                                 ("metrics.export_port=80", "metrics.export_port")])
def test_a_wrong_setting_is_named(capsys, override, named):
    assert named in _train_fails(capsys, "--config", str(REPO / "configs" / "demo.yaml"), "--set", override)


@pytest.mark.parametrize(("rows", "says"), [(0, "has 0 usable records"), (2, "has 2 usable records, fewer than "
                                                                                "train.batch_size=4")])
def test_a_split_that_cannot_fill_a_step_is_refused(pipeline_setup, tmp_path, capsys, rows, says):
    data = tmp_path / "vqa"
    _vqa_parquet(data, rows)
    config = pipeline_setup.write(f"small-{rows}", data={"source": "hf_vqa", "path": str(data)},
                                  model={"path": pipeline_setup.model_dir})
    err = _train_fails(capsys, "--config", str(config))
    assert says in err and str(data) in err


def test_a_taken_metrics_port_is_named_before_ray_starts(pipeline_setup, capsys):
    import ray

    assert not ray.is_initialized()  # the command starts its own Ray here
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        err = _train_fails(capsys, "--config", str(pipeline_setup.write("port")), "--set",
                           f"metrics.export_port={port}")
    assert f"metrics.export_port {port} on 127.0.0.1 is not available" in err
    assert not ray.is_initialized()
