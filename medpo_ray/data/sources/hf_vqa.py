"""HF-style VQA parquet (VQA-RAD, PathVQA, SLAKE mirrors): `image` struct {bytes, path}, `question`,
`answer`, one file or a folder of shards such as data/train-00000-of-00001.parquet."""
from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from medpo_ray.data.record import BadRecord, Record
from medpo_ray.data.sources.base import RecordSource
from medpo_ray.data.sources.files import batch_rows, canonical_split, decode_text, image_bytes
from medpo_ray.data.validate import RecordError, inside_root

_TEXT_COLUMNS = ("question", "answer")
# Optional per-row columns some mirrors carry (SLAKE's, VQA-RAD's original JSON fields); kept in meta.
_META_COLUMNS = ("q_lang", "modality", "location", "content_type", "question_type", "answer_type",
                 "img_name", "image_organ", "phrase_type")
_ID_COLUMNS = ("qid", "id", "split")
_CLOSED = {"yes", "no"}


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _image_type_problem(t: pa.DataType) -> str | None:
    """Why an `image` column type is unusable, or None (struct {bytes, path} or plain bytes)."""
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return None
    if pa.types.is_struct(t):
        names = {t.field(i).name: t.field(i).type for i in range(t.num_fields)}
        if "bytes" not in names and "path" not in names:
            return f"struct without 'bytes' or 'path' fields (has {', '.join(names) or 'none'})"
        if "bytes" in names and not _is_text(names["bytes"]):
            return f"image.bytes has type {names['bytes']}, expected binary"
        if "path" in names and not _is_text(names["path"]):
            return f"image.path has type {names['path']}, expected string"
        return None
    return f"has type {t}, expected struct{{bytes, path}} or binary"


class HFVQASource(RecordSource):
    """VQA records from HF `datasets`-style parquet shards; split from a `split` column, else the file
    or folder name (train-0000x.parquet, validation/...), else 'train'."""

    kind = "hf_vqa"

    @classmethod
    def detect(cls, path: Path) -> bool:
        """A parquet file, or a folder of them, whose first file has image, question and answer columns."""
        files = cls._files(path)
        if not files:
            return False
        try:
            names = set(pq.read_schema(files[0]).names)
        except (OSError, pa.ArrowException):
            return False
        return {"image", "question", "answer"} <= names

    @staticmethod
    def _files(path: Path) -> list[Path]:
        if path.is_file():
            return [path] if path.suffix == ".parquet" else []
        return sorted(p for p in path.rglob("*.parquet") if p.is_file()) if path.is_dir() else []

    def _file_split(self, file: Path) -> str:
        for part in [file.stem.split("-")[0], *reversed(file.relative_to(self.root).parent.parts)]:
            if (split := canonical_split(part)) is not None:
                return split
        return "train"

    def _iter_raw(self) -> Iterator[Record | BadRecord]:
        files = self._files(self.path)
        if not files:
            yield BadRecord(str(self.path), "file", "no .parquet files found")
        counters: Counter = Counter()  # per-split row numbers give stable ids across shards
        for file in files:
            yield from self._iter_file(file, counters)

    def _iter_file(self, file: Path, counters: Counter) -> Iterator[Record | BadRecord]:
        name = str(file.relative_to(self.root))
        try:
            pf = pq.ParquetFile(file)
            schema = pf.schema_arrow
        except (OSError, pa.ArrowException) as e:
            yield BadRecord(name, "file", f"not a readable parquet file ({e})")
            return
        problems = [(c, f"missing column {c!r} (file has: {', '.join(schema.names)})")
                    for c in ("image", *_TEXT_COLUMNS) if c not in schema.names]
        if "image" in schema.names and (why := _image_type_problem(schema.field("image").type)):
            problems.append(("image", f"column 'image' {why}"))
        problems += [(c, f"column {c!r} has type {schema.field(c).type}, expected string")
                     for c in _TEXT_COLUMNS if c in schema.names and not _is_text(schema.field(c).type)]
        if problems:
            # The whole file is unusable; its rows still take their ids so later shards keep theirs.
            counters[self._file_split(file)] += pf.metadata.num_rows
            for column, reason in problems:
                yield BadRecord(name, column, reason)
            return
        extra = [c for c in (*_META_COLUMNS, *_ID_COLUMNS) if c in schema.names]
        file_split = self._file_split(file)
        try:
            for batch in pf.iter_batches(batch_size=256, columns=["image", *_TEXT_COLUMNS, *extra]):
                for row in batch_rows(batch):
                    split = self._row_split(row, file_split)
                    index = counters[split]
                    counters[split] += 1
                    if self.wants(split):
                        yield self._record(row, split, index, file)
        except (OSError, pa.ArrowException) as e:
            yield BadRecord(name, "file", f"parquet data unreadable after {sum(counters.values())} rows ({e})")

    @staticmethod
    def _row_split(row: dict, default: str) -> str:
        raw = row.get("split")
        return (canonical_split(raw) or raw) if isinstance(raw, str) and raw.strip() else default

    def _record(self, row: dict, split: str, index: int, file: Path) -> Record | BadRecord:
        own_id = row.get("qid", row.get("id"))
        if isinstance(own_id, RecordError):  # undecodable id: fall back to the row number
            own_id = None
        record_id = f"{split}/{own_id}" if own_id not in (None, "") else f"{split}/{index:06d}"
        try:
            question = decode_text(row["question"], "question")
            answer = decode_text(row["answer"], "answer")
            image, image_name, image_path = self._image(row["image"], file)
            meta = {k: decode_text(v, k) if isinstance(v, (bytes, RecordError)) else v
                    for k, v in row.items() if k in _META_COLUMNS and v is not None}
        except RecordError as e:
            return e.bad(record_id)
        answer_type = str(meta.get("answer_type", "")).lower() or (
            "closed" if answer.strip().lower() in _CLOSED else "open")
        question_type = meta.get("content_type", meta.get("question_type"))
        if image_path:
            meta["image_path"] = image_path
        return Record(
            record_id=record_id, task="vqa", image=image, prompt=question, target=answer,
            study_id=image_name or hashlib.sha1(image).hexdigest()[:16], split=split,
            question_type=str(question_type).lower() if question_type else None,
            answer_type=answer_type if answer_type in ("closed", "open") else None,
            meta={**meta, "file": file.name})

    def _image(self, value: object, file: Path) -> tuple[bytes, str | None, str | None]:
        """(encoded bytes, image name, path read under the root) from a {bytes, path} struct or bytes.

        The name (the struct's path) identifies the study; the file is only read when bytes are absent.
        """
        if isinstance(value, (bytes, bytearray)):
            return bytes(value), None, None
        if isinstance(value, RecordError):
            raise value
        if not isinstance(value, dict):
            raise RecordError("image", "missing (null)")
        path = decode_text(value["path"], "image.path") if value.get("path") is not None else None
        if value.get("bytes") is not None:
            if len(value["bytes"]) == 0:  # given but empty: the image is empty, not missing from disk
                raise RecordError("image", "empty (0 bytes)")
            return bytes(value["bytes"]), path, None
        if not path:
            raise RecordError("image", "neither bytes nor a path")
        # Without embedded bytes, HF `datasets` resolves the path against the parquet file's folder.
        relative = file.parent.relative_to(self.root) / path
        target = inside_root(self.root, relative, "image.path")
        return image_bytes(target, "image", self.limits), path, str(relative)
