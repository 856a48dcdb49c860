"""SLAKE in its original layout: train.json / validate.json / test.json question lists next to
imgs/xmlabN/{source.jpg, mask.png, detection.json}."""
from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from medpo_ray.data.record import BadRecord, Record
from medpo_ray.data.sources.base import RecordSource
from medpo_ray.data.sources.files import canonical_split, decode_text, read_bytes
from medpo_ray.data.validate import RecordError, inside_root

_QUESTION_FILES = ("train.json", "validate.json", "validation.json", "test.json")
_META_KEYS = ("q_lang", "location", "modality", "content_type", "base_type", "img_id")


def parse_detection(data: bytes) -> tuple[tuple[tuple[float, float, float, float], ...], tuple[str, ...]]:
    """Boxes (x0, y0, x1, y1) and their labels from SLAKE's detection.json: a list of {label: [x, y, w, h]}."""
    try:
        entries = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecordError("detection.json", f"not valid JSON ({e})") from None
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list):
        raise RecordError("detection.json", f"expected a list of {{label: [x, y, w, h]}}, got {type(entries).__name__}")
    boxes, labels = [], []
    for entry in entries:
        if not isinstance(entry, dict):
            raise RecordError("detection.json", f"expected {{label: [x, y, w, h]}}, got {entry!r:.60}")
        for label, xywh in entry.items():
            if (not isinstance(xywh, list) or len(xywh) != 4
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xywh)):
                raise RecordError("detection.json", f"box of {label!r} is not [x, y, w, h]: {xywh!r:.60}")
            x, y, w, h = (float(v) for v in xywh)
            boxes.append((x, y, x + w, y + h))
            labels.append(str(label))
    return tuple(boxes), tuple(labels)


class SlakeSource(RecordSource):
    """SLAKE VQA records. The image's mask.png (SLAKE's organ/lesion segmentation, labels in
    mask.txt) becomes `lesion_mask` and detection.json the boxes, so lesion-aware corruption can use
    them. Both languages are kept; `meta['q_lang']` tells them apart."""

    kind = "slake"

    @classmethod
    def detect(cls, path: Path) -> bool:
        """A folder with imgs/ and at least one of the SLAKE question files."""
        return path.is_dir() and (path / "imgs").is_dir() and any((path / f).is_file() for f in _QUESTION_FILES)

    def _iter_raw(self) -> Iterator[Record | BadRecord]:
        files = [self.path / f for f in _QUESTION_FILES if (self.path / f).is_file()]
        if not files:
            yield BadRecord(str(self.path), "file", f"none of {', '.join(_QUESTION_FILES)} found")
        for file in files:
            split = canonical_split(file.stem) or file.stem
            if not self.wants(split):
                continue
            try:
                entries = json.loads(read_bytes(file, "file", self.limits).decode("utf-8"))
            except RecordError as e:
                yield e.bad(file.name)
                continue
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                yield BadRecord(file.name, "file", f"not valid UTF-8 JSON ({e})")
                continue
            if not isinstance(entries, list):
                yield BadRecord(file.name, "file", f"expected a list of questions, got {type(entries).__name__}")
                continue
            for i, entry in enumerate(entries):
                yield self._record(entry, split, i, file.name)

    def _record(self, entry: object, split: str, index: int, file: str) -> Record | BadRecord:
        qid = entry.get("qid") if isinstance(entry, dict) else None
        record_id = f"{split}/{qid}" if isinstance(qid, (int, str)) and qid != "" else f"{split}/#{index}"
        try:
            if not isinstance(entry, dict):
                raise RecordError("entry", f"entry {index} of {file} is {type(entry).__name__}, not an object")
            for key in ("img_name", "question", "answer"):
                if key not in entry:
                    raise RecordError(key, f"missing in entry {index} of {file}")
            img_name = decode_text(entry["img_name"], "img_name")
            question = decode_text(entry["question"], "question")
            answer = decode_text(entry["answer"], "answer")
            image, mask, boxes, labels = self._image_folder(img_name)
        except RecordError as e:
            return e.bad(record_id)
        answer_type = str(entry.get("answer_type", "")).lower()
        content_type = entry.get("content_type")
        folder = str(Path(img_name).parent)
        meta = {k: entry[k] for k in _META_KEYS if k in entry}
        meta.update(image_path=str(Path("imgs") / img_name), box_labels=list(labels))
        if mask is not None:
            meta["mask_path"] = str(Path("imgs") / folder / "mask.png")
        return Record(
            record_id=record_id, task="vqa", image=image, prompt=question, target=answer,
            study_id=folder, split=split, lesion_mask=mask, boxes=boxes,
            question_type=str(content_type).lower() if content_type else None,
            answer_type=answer_type if answer_type in ("open", "closed") else None, meta=meta)

    @lru_cache(maxsize=64)  # noqa: B019 - one source per dataset; ~20 questions share each image
    def _image_folder(self, img_name: str) -> tuple[bytes, bytes | None, tuple, tuple[str, ...]]:
        """(image, mask or None, boxes, box labels) of one imgs/xmlabN folder."""
        image_path = inside_root(self.root, Path("imgs") / img_name, "img_name")
        image = read_bytes(image_path, "image", self.limits)
        mask_path, detection_path = image_path.parent / "mask.png", image_path.parent / "detection.json"
        mask = read_bytes(mask_path, "lesion_mask", self.limits) if mask_path.is_file() else None
        boxes, labels = ((), ())
        if detection_path.is_file():
            boxes, labels = parse_detection(read_bytes(detection_path, "detection.json", self.limits))
        return image, mask, boxes, labels
