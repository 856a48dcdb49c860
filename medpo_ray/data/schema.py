"""Explicit pyarrow schemas of the embedded dataset's parquet files (studies.parquet, vqa.parquet)."""
from __future__ import annotations

import pyarrow as pa

STUDIES_FILE = "studies.parquet"
VQA_FILE = "vqa.parquet"
MANIFEST_FILE = "manifest.json"

LESION = pa.struct([
    pa.field("id", pa.int32(), nullable=False),
    pa.field("side", pa.string(), nullable=False),
    pa.field("cx", pa.int32(), nullable=False),
    pa.field("cy", pa.int32(), nullable=False),
    pa.field("r_px", pa.float64(), nullable=False),
    pa.field("diameter_mm", pa.int32(), nullable=False),
    pa.field("size", pa.string(), nullable=False),
    pa.field("bbox", pa.list_(pa.int32(), 4), nullable=False),
    pa.field("polarity", pa.string(), nullable=False),
])

# The findings dict of medpo_ray.data.reports without its "lesions" list, which has its own column.
FINDINGS = pa.struct([
    pa.field("modality", pa.string(), nullable=False),
    pa.field("body_part", pa.string(), nullable=False),
    pa.field("region", pa.string(), nullable=False),
    pa.field("noun", pa.string(), nullable=False),
    pa.field("count", pa.struct([pa.field("right", pa.int32(), nullable=False),
                                 pa.field("left", pa.int32(), nullable=False)]), nullable=False),
    pa.field("total", pa.int32(), nullable=False),
    pa.field("mm_per_px", pa.float64(), nullable=False),
])

STUDIES = pa.schema([
    pa.field("study_id", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("modality", pa.string(), nullable=False),
    pa.field("region", pa.string(), nullable=False),
    pa.field("base_image", pa.string(), nullable=False),
    pa.field("base_license", pa.string(), nullable=False),
    pa.field("image", pa.binary(), nullable=False),  # PNG, 8-bit grey
    pa.field("lesion_mask", pa.binary(), nullable=False),  # PNG, 8-bit, 0 = background, k = lesion id k
    pa.field("lesions", pa.list_(LESION), nullable=False),
    pa.field("findings", FINDINGS, nullable=False),
    pa.field("report", pa.string(), nullable=False),
    pa.field("generator_version", pa.string(), nullable=False),
    pa.field("seed", pa.int64(), nullable=False),
])

VQA = pa.schema([
    pa.field("qid", pa.string(), nullable=False),
    pa.field("study_id", pa.string(), nullable=False),
    pa.field("question_type", pa.string(), nullable=False),
    pa.field("question", pa.string(), nullable=False),
    pa.field("answer", pa.string(), nullable=False),
    pa.field("answer_type", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
])


def write_table(rows: list[dict], schema: pa.Schema, path) -> None:
    """Write rows with an explicit schema and fixed writer settings, so equal rows give equal bytes."""
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path, compression="zstd", compression_level=3, row_group_size=1024,
                   write_statistics=False, store_schema=True)
