"""The generator as a whole: byte-identical output, per-study reproducibility, splits by study, CLI."""
import hashlib
import json
from collections import Counter

import pyarrow.parquet as pq
import pytest
from PIL import Image

from driver.cli import main
from medpo_ray.data.lesions import LesionParams
from medpo_ray.data.synth import generate_study, split_of, synthesize

pytestmark = pytest.mark.unit

FILES = ("studies.parquet", "vqa.parquet", "manifest.json")
PARAMS = LesionParams.from_difficulty(0.5, 112)


def _bytes(d):
    return {name: (d / name).read_bytes() for name in FILES}


def test_same_arguments_give_identical_bytes_and_another_seed_differs(tmp_path, embedded_dir):
    again = tmp_path / "again"
    synthesize(again, 40, 0, 112, PARAMS)
    assert _bytes(again) == _bytes(embedded_dir)
    other = tmp_path / "other"
    synthesize(other, 40, 1, 112, PARAMS)
    assert (other / "studies.parquet").read_bytes() != (embedded_dir / "studies.parquet").read_bytes()


def test_manifest_records_checksums_and_counts(embedded_dir, studies):
    manifest = json.loads((embedded_dir / "manifest.json").read_text())
    for name in ("studies.parquet", "vqa.parquet"):
        assert manifest["files"][name] == hashlib.sha256((embedded_dir / name).read_bytes()).hexdigest()
    assert manifest["counts"]["studies"] == len(studies) == 40
    assert manifest["counts"]["split"] == dict(sorted(Counter(s["split"] for s in studies).items()))


def test_a_study_depends_only_on_seed_and_index(studies):
    # Study 25 made alone (as one shard would) equals study 25 of the 40-study run.
    row, _ = generate_study(25, 0, 112, PARAMS)
    assert row["image"] == studies[25]["image"] and row["report"] == studies[25]["report"]


def test_splits_are_by_study_and_exact_per_block(studies):
    assert len({s["study_id"] for s in studies}) == len(studies)
    for block in range(4):
        assert Counter(s["split"] for s in studies[10 * block:10 * block + 10]) == {"train": 8, "val": 1, "test": 1}
    assert [split_of(0, i) for i in range(40)] == [s["split"] for s in studies]
    assert [split_of(0, i) for i in range(40)] != [split_of(1, i) for i in range(40)]


def test_parquet_schema_is_the_declared_one(embedded_dir):
    from medpo_ray.data.schema import STUDIES, VQA

    assert pq.read_schema(embedded_dir / "studies.parquet").remove_metadata() == STUDIES
    assert pq.read_schema(embedded_dir / "vqa.parquet").remove_metadata() == VQA


def test_cli_synth_with_preview(tmp_path, capsys):
    out, png = tmp_path / "data", tmp_path / "sheet.png"
    assert main(["data", "synth", "--out", str(out), "--studies", "12", "--seed", "3", "--difficulty", "0.25",
                 "--preview", str(png), "--preview-rows", "3"]) == 0
    printed = capsys.readouterr()
    assert "wrote 12 studies" in printed.out and "split:" in printed.out
    assert "studies/s" in printed.err  # progress line with a rate
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["lesion_params"]["amplitude"] == pytest.approx(0.6)
    with Image.open(png) as im:
        assert im.width == 3 * 224 + 330 and im.height == 18 + 3 * 224


def test_cli_radius_levels_are_recorded_only_when_set(tmp_path, capsys, embedded_dir):
    out = tmp_path / "levels"
    assert main(["data", "synth", "--out", str(out), "--studies", "12", "--difficulty", "0.5",
                 "--radius-levels", "3"]) == 0
    assert "levels 4, 9, 14 px" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["args"]["radius_levels"] == 3
    assert manifest["lesion_params"]["radii"] == [4.0, 9.0, 14.0]
    rows = pq.read_table(out / "studies.parquet").to_pylist()
    assert {les["r_px"] for r in rows for les in r["lesions"]} <= {4.0, 9.0, 14.0}
    # A continuous dataset's manifest has no trace of the knob, so it reads (and hashes) as before.
    plain = json.loads((embedded_dir / "manifest.json").read_text())
    assert "radius_levels" not in plain["args"] and "radius_levels" not in plain["lesion_params"]


@pytest.mark.parametrize("args,flag", [(["--radius-min", "9", "--radius-max", "5"], "radius_min"),
                                       (["--size", "40"], "--size"), (["--difficulty", "2"], "--difficulty"),
                                       (["--radius-levels", "1"], "radius_levels"),
                                       (["--radius-levels", "-2"], "--radius-levels"),
                                       (["--radius-max", "30"], "radius_max")])
def test_cli_rejects_bad_knobs_with_a_message(tmp_path, capsys, args, flag):
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--studies", "4", *args]) == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err
