"""Validation throughput: records/s of `validate_path` (parse + full image decode + every check).

Cases: an HF-style VQA parquet of distinct 512² JPEGs; the same with each image shared by 10
questions (SLAKE/VQA-RAD-like, where the decode memo helps); a synthesized embedded dataset (112²).
usage: python bench/validation.py [--rows 300] [--studies 60]
The last printed line is one JSON object (keys: hf_vqa_distinct_rec_per_s, hf_vqa_shared_rec_per_s,
embedded_rec_per_s, ...). Wall clock on a shared machine: compare runs taken under the same load.
"""
from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from medpo_ray.data.validate import validate_path


def jpeg(seed: int, size: int = 512) -> bytes:
    """A smooth random greyscale JPEG (compresses like a radiograph, unlike white noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size // 16, size // 16)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((size, size), Image.BILINEAR).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_vqa(path: Path, rows: int, questions_per_image: int) -> None:
    """An HF-style VQA parquet: image struct {bytes, path}, question, answer."""
    images = [jpeg(i) for i in range(rows // questions_per_image)]
    table = pa.table({
        "image": [{"bytes": images[i // questions_per_image], "path": f"img{i // questions_per_image}.jpg"}
                  for i in range(rows)],
        "question": [f"is there an abnormality in image {i}?" for i in range(rows)],
        "answer": ["yes" if i % 2 else "no" for i in range(rows)],
    })
    pq.write_table(table, path)


def timed(path: Path) -> tuple[float, int, int]:
    """(records per second, good, bad) of one validation pass."""
    start = time.perf_counter()
    report = validate_path(path)
    seconds = time.perf_counter() - start
    return report.good / seconds, report.good, len(report.bad)


def main() -> None:
    """Run every case and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--studies", type=int, default=60)
    args = parser.parse_args()
    out: dict[str, float | int] = {"rows": args.rows, "studies": args.studies}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, per_image in (("distinct", 1), ("shared", 10)):
            folder = tmp / name
            folder.mkdir()
            write_vqa(folder / "train-00000-of-00001.parquet", args.rows, per_image)
            rate, good, bad = timed(folder)
            print(f"hf_vqa {name:8s} 512² JPEG: {rate:8.1f} records/s ({good} good, {bad} bad)")
            out[f"hf_vqa_{name}_rec_per_s"] = round(rate, 1)
        from medpo_ray.data.lesions import LesionParams
        from medpo_ray.data.synth import synthesize

        synthesize(tmp / "embedded", args.studies, 0, 112, LesionParams.from_difficulty(0.5, 112))
        rate, good, bad = timed(tmp / "embedded")
        print(f"embedded 112² PNG (reports + VQA): {rate:8.1f} records/s ({good} good, {bad} bad)")
        out["embedded_rec_per_s"] = round(rate, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
