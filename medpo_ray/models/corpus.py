"""Text the policy's tokenizer is trained on: a dataset's own texts, or the embedded report grammar."""
from __future__ import annotations

from pathlib import Path

from medpo_ray.errors import MedpoError

# Columns that hold model-facing text in the embedded layout and in HF-style VQA parquet files.
TEXT_COLUMNS = ("prompt", "report", "question", "answer", "target", "text")


def dataset_texts(data_dir: str | Path, kind: str = "auto") -> list[str]:
    """Every text cell of the dataset's parquet files (sorted by file, row order), plus the report prompt; for
    a layout without parquet files at its root (SLAKE, IU-Xray, MIMIC-CXR, box CSV), the prompts and answers of
    its records as its source reads them."""
    import pyarrow.parquet as pq

    from medpo_ray.data.reports import REPORT_PROMPT

    root = Path(data_dir)
    files = sorted(root.glob("*.parquet")) if root.is_dir() else []
    if not files:
        return _record_texts(root, kind)
    texts = [REPORT_PROMPT]
    for file in files:
        try:
            table = pq.read_table(file, columns=[c for c in TEXT_COLUMNS if c in pq.read_schema(file).names])
        except (OSError, ValueError) as e:
            raise MedpoError(f"{file}: unreadable parquet file: {e}") from None
        for column in table.column_names:
            texts.extend(t for t in table.column(column).to_pylist() if isinstance(t, str))
    if len(texts) == 1:
        raise MedpoError(f"--data {str(root)!r}: no text column ({', '.join(TEXT_COLUMNS)}) in its parquet files")
    return texts


def _record_texts(root: Path, kind: str) -> list[str]:
    from medpo_ray.data.reports import REPORT_PROMPT
    from medpo_ray.data.sources import open_source

    loaded = open_source(kind, root).load()
    texts = [REPORT_PROMPT, *(t for r in loaded.records for t in (r.prompt, r.target))]
    if len(texts) == 1:
        raise MedpoError(f"--data {str(root)!r}: no usable records to take a vocabulary from "
                         f"({len(loaded.bad)} quarantined)")
    return texts


def grammar_texts(studies: int = 2000, seed: int = 0) -> list[str]:
    """Reports and VQA pairs rendered from random findings by the embedded grammar, without images.

    Findings follow `medpo_ray.data.reports`' convention (per-base modality/region/noun, 0-3 lesions
    per study, diameters over all three size bins), so the vocabulary is the embedded dataset's.
    """
    import numpy as np

    from medpo_ray.data.dicom_sources import BASES
    from medpo_ray.data.lesions import SIDES, size_bin
    from medpo_ray.data.reports import REPORT_PROMPT, render_report
    from medpo_ray.data.vqa import make_questions

    texts = [REPORT_PROMPT]
    for i in range(studies):
        rng = np.random.default_rng([seed, i])
        base = BASES[int(rng.integers(len(BASES)))]
        sides = sorted((SIDES[int(rng.integers(2))] for _ in range(int(rng.integers(4)))), key=SIDES.index)
        lesions = []
        for side in sides:
            d = int(rng.integers(3, 31))
            lesions.append({"side": side, "diameter_mm": d, "size": size_bin(d)})
        findings = {"modality": base.modality, "body_part": base.body_part, "region": base.region,
                    "noun": base.noun, "count": {s: sides.count(s) for s in SIDES}, "total": len(lesions),
                    "lesions": lesions}
        texts.append(render_report(findings, rng))
        for q in make_questions(findings, rng):
            texts.extend((q["question"], q["answer"]))
    return texts
