"""The embedded dataset written by `medpo-ray data synth`: studies.parquet (one report record per study)
and vqa.parquet (one VQA record per question), both carrying the study's structured findings, lesion
mask and boxes."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from medpo_ray.data.lesions import SIDES, SIZE_BINS, size_bin
from medpo_ray.data.record import BadRecord, Record
from medpo_ray.data.reports import REPORT_PROMPT
from medpo_ray.data.schema import STUDIES, STUDIES_FILE, VQA, VQA_FILE
from medpo_ray.data.sources.base import RecordSource
from medpo_ray.data.sources.files import decode_text
from medpo_ray.data.validate import Limits, RecordError, check_record

_TASKS = ("report", "vqa", "both")
_LESION_INTS = ("id", "cx", "cy", "diameter_mm")
_FINDINGS_TEXT = ("modality", "body_part", "region", "noun")


def _utf8_or_bytes(value: bytes | None) -> str | bytes | None:
    try:
        return value.decode("utf-8") if value is not None else None
    except UnicodeDecodeError:
        return value


def _int(value: object, field: str, low: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise RecordError(field, f"expected an integer >= {low}, got {value!r}")
    return value


def _lesion(les: object, k: int) -> dict:
    where = f"lesions[{k}]"
    if not isinstance(les, dict):
        raise RecordError(where, f"expected a struct, got {type(les).__name__}")
    for key in _LESION_INTS:
        _int(les.get(key), f"{where}.{key}", 1 if key == "id" else 0)
    if les.get("side") not in SIDES:
        raise RecordError(f"{where}.side", f"expected one of {SIDES}, got {les.get('side')!r}")
    r = les.get("r_px")
    if not isinstance(r, (int, float)) or not r > 0:
        raise RecordError(f"{where}.r_px", f"expected a positive radius, got {r!r}")
    if les.get("size") not in SIZE_BINS or les["size"] != size_bin(les["diameter_mm"]):
        raise RecordError(f"{where}.size", f"{les.get('size')!r} is not the size bin of "
                                           f"{les['diameter_mm']} mm ({size_bin(les['diameter_mm'])})")
    box = les.get("bbox")
    if not isinstance(box, list) or len(box) != 4:
        raise RecordError(f"{where}.bbox", f"expected [x0, y0, x1, y1], got {box!r}")
    for j, v in enumerate(box):
        _int(v, f"{where}.bbox[{j}]")
    return les


def _findings(row: dict, lesions: list[dict]) -> dict:
    f = row.get("findings")
    if not isinstance(f, dict):
        raise RecordError("findings", "missing (null)")
    for key in _FINDINGS_TEXT:
        if not isinstance(f.get(key), str) or not f[key]:
            raise RecordError(f"findings.{key}", f"expected text, got {f.get(key)!r}")
    count = f.get("count") or {}
    for side in SIDES:
        n = sum(les["side"] == side for les in lesions)
        if count.get(side) != n:
            raise RecordError(f"findings.count.{side}", f"says {count.get(side)!r} but {n} lesions are on the {side}")
    if f.get("total") != len(lesions):
        raise RecordError("findings.total", f"says {f.get('total')!r} but there are {len(lesions)} lesions")
    return {**f, "count": dict(count), "lesions": lesions}


class EmbeddedSource(RecordSource):
    """Records of an embedded dataset directory; `task` picks report records, VQA records or both."""

    kind = "embedded"

    def __init__(self, path: str | Path, split: str | None = None, limits: Limits | None = None,
                 task: str = "both"):
        super().__init__(path, split=split, limits=limits)
        if task not in _TASKS:
            raise ValueError(f"task must be one of {_TASKS}, got {task!r}")
        self.task = task

    @classmethod
    def detect(cls, path: Path) -> bool:
        """A directory holding a studies.parquet with the embedded columns."""
        file = Path(path) / STUDIES_FILE
        try:
            return file.is_file() and {"lesion_mask", "report", "findings"} <= set(pq.read_schema(file).names)
        except (OSError, pa.ArrowException):
            return False

    def _rows(self, name: str, schema: pa.Schema) -> Iterator[dict | BadRecord]:
        """Rows of one parquet file as dicts; file-level problems as BadRecords naming the file."""
        file = self.root / name
        try:
            pf = pq.ParquetFile(file)
        except (OSError, pa.ArrowException) as e:
            yield BadRecord(name, "file", f"not a readable parquet file ({e})")
            return
        missing = [c for c in schema.names if c not in pf.schema_arrow.names]
        if missing:
            yield BadRecord(name, missing[0], f"missing column(s) {', '.join(missing)}")
            return
        row_no = 0
        try:
            for batch in pf.iter_batches(batch_size=512, columns=schema.names):
                columns = {}
                for name in batch.schema.names:
                    arr = batch.column(name)
                    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
                        # Read text as raw bytes: a row with invalid UTF-8 must cost that row (its
                        # field then fails decode_text), not the whole batch.
                        columns[name] = [_utf8_or_bytes(v) for v in arr.cast(pa.large_binary()).to_pylist()]
                    else:
                        columns[name] = arr.to_pylist()
                for i in range(batch.num_rows):
                    yield {**{c: v[i] for c, v in columns.items()}, "_row": row_no}
                    row_no += 1
        except (OSError, pa.ArrowException, UnicodeDecodeError) as e:
            yield BadRecord(name, "file", f"data unreadable after {row_no} rows ({e})")

    def _study(self, row: dict) -> dict:
        """The parsed fields of one studies.parquet row; RecordError names the bad field."""
        sid = decode_text(row.get("study_id"), "study_id")
        split = decode_text(row.get("split"), "split")
        report = decode_text(row.get("report"), "report")
        for key in ("image", "lesion_mask"):
            if not isinstance(row.get(key), bytes) or not row[key]:
                raise RecordError(key, "missing (null or empty)")
        raw = row.get("lesions")
        if not isinstance(raw, list):
            raise RecordError("lesions", "missing (null)")
        lesions = [_lesion(les, k) for k, les in enumerate(raw)]
        boxes = tuple(tuple(float(v) for v in les["bbox"]) for les in lesions)
        meta = {k: row[k] for k in ("base_image", "modality", "region", "generator_version")
                if isinstance(row.get(k), str) and row[k]}
        return {"study_id": sid, "split": split, "report": report, "image": row["image"],
                "lesion_mask": row["lesion_mask"], "findings": _findings(row, lesions), "boxes": boxes,
                "meta": meta}

    def _iter_raw(self) -> Iterator[Record | BadRecord]:
        studies: dict[str, dict] = {}
        quarantined: dict[str, BadRecord] = {}
        want_reports = self.task in ("report", "both")
        for row in self._rows(STUDIES_FILE, STUDIES):
            if isinstance(row, BadRecord):
                yield row
                return
            rid = row["study_id"] if isinstance(row.get("study_id"), str) and row["study_id"] else \
                f"{STUDIES_FILE} row {row['_row']}"
            if rid in studies or rid in quarantined:
                # The first row with this id keeps it; its questions stay usable.
                if want_reports:
                    yield BadRecord(rid, "study_id", f"duplicate study id (again at row {row['_row']})")
                continue
            try:
                s = self._study(row)
            except RecordError as e:
                quarantined[rid] = e.bad(rid)
                if want_reports:
                    yield quarantined[rid]
                continue
            record = Record(record_id=rid, task="report", image=s["image"], prompt=REPORT_PROMPT,
                            target=s["report"], study_id=rid, split=s["split"], findings=s["findings"],
                            lesion_mask=s["lesion_mask"], boxes=s["boxes"], meta=s["meta"])
            # Checked here, not only in __iter__, so that a study whose image or mask is unusable
            # takes its questions with it (they share those bytes) under one named reason.
            problem = check_record(record, root=self.root, limits=self.limits)
            if problem is not None:
                quarantined[rid] = problem
            else:
                studies[rid] = s
            if want_reports:
                yield problem or record
        if self.task in ("vqa", "both"):
            yield from self._iter_vqa(studies, quarantined)

    def _iter_vqa(self, studies: dict[str, dict], quarantined: dict[str, BadRecord]) -> Iterator[Record | BadRecord]:
        seen: set[str] = set()
        for row in self._rows(VQA_FILE, VQA):
            if isinstance(row, BadRecord):
                yield row
                return
            qid = row["qid"] if isinstance(row.get("qid"), str) and row["qid"] else f"{VQA_FILE} row {row['_row']}"
            try:
                if qid in seen:
                    raise RecordError("qid", f"duplicate question id (again at row {row['_row']})")
                seen.add(qid)
                sid = decode_text(row.get("study_id"), "study_id")
                if sid in quarantined:
                    # The question shares the study's image, mask and findings: the same field is bad.
                    bad = quarantined[sid]
                    raise RecordError(bad.field, f"{bad.reason} (in study {sid!r})")
                if sid not in studies:
                    raise RecordError("study_id", f"no study {sid!r} in {STUDIES_FILE}")
                s = studies[sid]
                split = decode_text(row.get("split"), "split")
                if split != s["split"]:
                    raise RecordError("split", f"{split!r} but study {sid!r} is in {s['split']!r}")
                question = decode_text(row.get("question"), "question")
                answer = decode_text(row.get("answer"), "answer")
                answer_type = decode_text(row.get("answer_type"), "answer_type")
                if answer_type not in ("closed", "open"):
                    raise RecordError("answer_type", f"expected 'closed' or 'open', got {answer_type!r}")
                question_type = decode_text(row.get("question_type"), "question_type")
            except RecordError as e:
                yield e.bad(qid)
                continue
            yield Record(record_id=qid, task="vqa", image=s["image"], prompt=question, target=answer,
                         study_id=sid, split=split, findings=s["findings"], lesion_mask=s["lesion_mask"],
                         boxes=s["boxes"], question_type=question_type, answer_type=answer_type,
                         meta=s["meta"])
