"""The embedded dataset generator: synthetic lesions on real slices, reports, VQA, hold-out splits.

Every study draws from its own counter-based RNG (Philox keyed by (seed, study index)), so study k
is the same whatever the number of studies or the order they are made in, and shards can be made
independently. Splits are exact 80/10/10 within each block of ten consecutive studies.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medpo_ray.data import schema
from medpo_ray.data.dicom_sources import BASES, resized_base
from medpo_ray.data.lesions import SIDES, LesionParams, place_lesions, render_lesions
from medpo_ray.data.reports import render_report
from medpo_ray.data.vqa import make_questions

GENERATOR_VERSION = "embedded-1"
SPLITS = ("train",) * 8 + ("val", "test")
_MARGIN = 0.04  # crop jitter: the anatomy shifts by up to 4% of the width between studies
_GAMMA = (0.8, 1.25)
_NOISE_SIGMA = 0.012  # acquisition noise on top of the base, so no two studies share a background
_RNG_STUDY, _RNG_SPLIT = 0, 1


def study_rng(seed: int, index: int, stream: int = _RNG_STUDY) -> np.random.Generator:
    """The counter-based generator of one study (or of one split block, stream 1)."""
    return np.random.Generator(np.random.Philox(key=np.array([seed, index], dtype=np.uint64),
                                                counter=np.array([0, 0, 0, stream], dtype=np.uint64)))


def study_id(index: int) -> str:
    """Stable id of the study with this index."""
    return f"study-{index:06d}"


def split_of(seed: int, index: int) -> str:
    """train / val / test for a study: a seeded permutation of 8/1/1 per block of ten indices."""
    perm = study_rng(seed, index // 10, _RNG_SPLIT).permutation(len(SPLITS))
    return SPLITS[int(perm[index % len(SPLITS)])]


def encode_png(a: np.ndarray) -> bytes:
    """8-bit greyscale PNG with no metadata chunks, so equal pixels give equal bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def generate_study(index: int, seed: int, size: int, params: LesionParams) -> tuple[dict, list[dict]]:
    """One study row (schema.STUDIES) and its VQA rows (schema.VQA), from (seed, index) alone."""
    rng = study_rng(seed, index)
    spec = BASES[int(rng.integers(len(BASES)))]
    margin = round(size * _MARGIN)
    full = size + 2 * margin
    big, mm_per_px = resized_base(spec.name, full)
    mm_per_px = round(mm_per_px, 4)
    dx, dy = (int(v) for v in rng.integers(0, 2 * margin + 1, size=2))
    gamma = float(np.exp(rng.uniform(np.log(_GAMMA[0]), np.log(_GAMMA[1]))))
    background = big[dy:dy + size, dx:dx + size] ** np.float32(gamma)
    regions = {side: (x0 * full - dx, y0 * full - dy, x1 * full - dx, y1 * full - dy)
               for side, (x0, y0, x1, y1) in spec.regions.items()}
    placed = place_lesions(rng, size, regions, params)
    image, mask, lesions = render_lesions(rng, background, placed, params, mm_per_px, _NOISE_SIGMA)

    count = {s: sum(les["side"] == s for les in lesions) for s in SIDES}
    findings = {"modality": spec.modality, "body_part": spec.body_part, "region": spec.region,
                "noun": spec.noun, "count": count, "total": len(lesions), "mm_per_px": mm_per_px}
    full_findings = {**findings, "lesions": lesions}
    report = render_report(full_findings, rng)
    sid, split = study_id(index), split_of(seed, index)
    row = {"study_id": sid, "split": split, "modality": spec.modality, "region": spec.region,
           "base_image": spec.filename, "base_license": spec.license, "image": encode_png(image),
           "lesion_mask": encode_png(mask), "lesions": lesions, "findings": findings, "report": report,
           "generator_version": GENERATOR_VERSION, "seed": seed}
    questions = [{"qid": f"{sid}-q{k}", "study_id": sid, **q, "split": split}
                 for k, q in enumerate(make_questions(full_findings, rng))]
    return row, questions


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write(rows: list[dict], table_schema, path: Path) -> None:
    # Write beside the target and rename, so an interrupted run never leaves a half file behind.
    tmp = path.with_name(path.name + ".tmp")
    schema.write_table(rows, table_schema, tmp)
    os.replace(tmp, path)


def summarize(rows: list[dict], questions: list[dict]) -> dict:
    """Counts per split, modality, base, lesion count, size bin and question type."""
    def count(values) -> dict:
        return {str(k): v for k, v in sorted(Counter(values).items())}

    return {
        "studies": len(rows),
        "questions": len(questions),
        "split": count(r["split"] for r in rows),
        "modality": count(r["modality"] for r in rows),
        "base_image": count(r["base_image"] for r in rows),
        "lesions_per_study": count(len(r["lesions"]) for r in rows),
        "size": count(les["size"] for r in rows for les in r["lesions"]),
        "question_type": count(q["question_type"] for q in questions),
        "answer_type": count(q["answer_type"] for q in questions),
    }


def synthesize(out_dir: str | Path, studies: int, seed: int, size: int, params: LesionParams,
               args: dict | None = None, progress: Callable[[int, int], None] | None = None) -> dict:
    """Generate `studies` studies into out_dir (studies.parquet, vqa.parquet, manifest.json).

    Returns the manifest dict. `args` (the knobs as given) is recorded in the manifest; `progress`
    is called as progress(done, total) after each study.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, questions = [], []
    for i in range(studies):
        row, qs = generate_study(i, seed, size, params)
        rows.append(row)
        questions.extend(qs)
        if progress is not None:
            progress(i + 1, studies)
    _write(rows, schema.STUDIES, out / schema.STUDIES_FILE)
    _write(questions, schema.VQA, out / schema.VQA_FILE)
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "args": {**(args or {}), "studies": studies, "seed": seed, "size": size},
        "lesion_params": {"amplitude": params.amplitude, "radius_min": params.radius_min,
                          "radius_max": params.radius_max,
                          # only when set, so a continuous dataset's manifest (and fingerprint) is as before
                          **({"radius_levels": params.radius_levels, "radii": list(params.radii())}
                             if params.radius_levels else {})},
        "counts": summarize(rows, questions),
        "files": {name: _sha256(out / name) for name in (schema.STUDIES_FILE, schema.VQA_FILE)},
    }
    (out / schema.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
