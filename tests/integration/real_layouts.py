"""Small datasets in the real layouts (HF VQA parquet, SLAKE, IU-Xray, MIMIC-CXR-JPG), written in a test.

Report text is real: the IU-Xray reports torchxrayvision ships (read from its archive; MIMIC-CXR's layout
gets the same reports in its own section format, with CheXpert labels from the labeler). VQA questions
follow VQA-RAD's and SLAKE's question types. Images are made here: grey noise with one bright blob whose
side the VQA answers name, written as PNG or JPEG like the originals.
"""
from __future__ import annotations

import csv
import io
import json
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

SIZE = 112


def picture(seed: int, side: str = "left", fmt: str = "PNG") -> bytes:
    """A SIZE x SIZE greyscale image with a blob on `side` (left/right of the image)."""
    rng = np.random.default_rng(seed)
    img = rng.normal(90, 12, (SIZE, SIZE))
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cx = SIZE * (0.3 if side == "left" else 0.7)
    img += 120 * np.exp(-((xx - cx) ** 2 + (yy - SIZE / 2) ** 2) / (2 * 8.0 ** 2))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L").save(buf, format=fmt)
    return buf.getvalue()


def blob_mask(side: str) -> bytes:
    """The lesion mask of `picture`'s blob (SLAKE's mask.png)."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cx = SIZE * (0.3 if side == "left" else 0.7)
    m = (((xx - cx) ** 2 + (yy - SIZE / 2) ** 2) <= 12 ** 2).astype(np.uint8) * 255
    buf = io.BytesIO()
    Image.fromarray(m, "L").save(buf, format="PNG")
    return buf.getvalue()


def iu_xml_reports(n: int) -> list[tuple[str, bytes]]:
    """(file name, XML bytes) of the first n IU-Xray reports with FINDINGS text and an image id."""
    from medpo_ray.labeler.iu_xray import reports_archive

    out = []
    with tarfile.open(reports_archive(), "r:gz") as tar:
        for member in tar:
            if not (member.isfile() and member.name.endswith(".xml")):
                continue
            data = tar.extractfile(member).read()
            root = ET.fromstring(data)
            sections = {el.get("Label"): (el.text or "").strip() for el in root.iter("AbstractText")}
            if sections.get("FINDINGS") and sections.get("IMPRESSION") and root.find(".//parentImage") is not None:
                out.append((Path(member.name).name, data))
            if len(out) == n:
                return out
    return out


def write_iu_xray(root: Path, n: int = 60) -> Path:
    """ecgen-radiology/*.xml (real reports) and NLMCXR_png/<image id>.png."""
    (root / "ecgen-radiology").mkdir(parents=True)
    (root / "NLMCXR_png").mkdir()
    for i, (name, data) in enumerate(iu_xml_reports(n)):
        (root / "ecgen-radiology" / name).write_bytes(data)
        image_id = ET.fromstring(data).find(".//parentImage").get("id")
        (root / "NLMCXR_png" / f"{image_id}.png").write_bytes(picture(i, "left" if i % 2 else "right"))
    return root


def write_mimic_cxr(root: Path, n: int = 60) -> Path:
    """files/pXX/pSUBJECT/sSTUDY.txt + sSTUDY/*.jpg, the CheXpert and split CSVs (MIMIC-CXR-JPG layout)."""
    from medpo_ray.data.sources.mimic_cxr import CHEXPERT_COLUMNS
    from medpo_ray.labeler import chexpert_labels, label

    labels_rows, split_rows = [], []
    for i, (_, data) in enumerate(iu_xml_reports(n)):
        sections = {el.get("Label"): (el.text or "").strip() for el in ET.fromstring(data).iter("AbstractText")}
        subject, study = f"1{i:07d}", f"5{i:07d}"
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}"
        (folder / f"s{study}").mkdir(parents=True)
        text = (f"                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n"
                f" FINDINGS:\n\n {sections['FINDINGS']}\n\n IMPRESSION:\n\n {sections['IMPRESSION']}\n")
        (folder / f"s{study}.txt").write_text(text)
        (folder / f"s{study}" / f"d{i:05d}-0001.jpg").write_bytes(picture(i, "left" if i % 2 else "right", "JPEG"))
        chex = chexpert_labels(label(sections["FINDINGS"] + " " + sections["IMPRESSION"]))
        names = {c: c.lower().replace(" ", "_") for c in CHEXPERT_COLUMNS}
        labels_rows.append([subject, study] + [{1: "1.0", 0: "0.0", -1: "-1.0", None: ""}[chex.get(names[c])]
                                               for c in CHEXPERT_COLUMNS])
        split_rows.append([f"d{i:05d}-0001", study, subject, ("test", "validate", *["train"] * 7)[i % 9]])
    with (root / "mimic-cxr-2.0.0-chexpert.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["subject_id", "study_id", *CHEXPERT_COLUMNS], *labels_rows])
    with (root / "mimic-cxr-2.0.0-split.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["dicom_id", "study_id", "subject_id", "split"], *split_rows])
    return root


def _questions(i: int, side: str) -> list[dict]:
    """VQA-RAD / SLAKE-style questions about image i (its blob on `side`; odd images are 'MRI')."""
    return [
        {"question": "Is there an abnormality in this image?", "answer": "Yes", "answer_type": "CLOSED",
         "content_type": "Abnormality"},
        {"question": "Which side is the abnormality on?", "answer": side.capitalize(), "answer_type": "OPEN",
         "content_type": "Position"},
        {"question": "Is this an MRI?", "answer": "Yes" if i % 3 == 0 else "No", "answer_type": "CLOSED",
         "content_type": "Modality"},
        {"question": "What organ is shown?", "answer": ("Brain", "Lung", "Liver")[i % 3], "answer_type": "OPEN",
         "content_type": "Organ"},
    ]


def write_hf_vqa(root: Path, images: int = 24) -> Path:
    """data/train-00000-of-00001.parquet and data/test-00000-of-00001.parquet (VQA-RAD's HF layout)."""
    (root / "data").mkdir(parents=True)
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for split, ids in (("train", range(0, images - 6)), ("test", range(images - 6, images))):
        rows = []
        for i in ids:
            side = "left" if i % 2 else "right"
            image = {"bytes": picture(100 + i, side), "path": f"img_{i}.png"}
            rows += [{"image": image, "question": q["question"], "answer": q["answer"].lower(),
                      "answer_type": q["answer_type"], "question_type": q["content_type"].upper()[:4]}
                     for q in _questions(i, side)]
        table = pa.table({"image": pa.array([r["image"] for r in rows], type=struct),
                          **{k: pa.array([r[k] for r in rows], type=pa.string())
                             for k in ("question", "answer", "answer_type", "question_type")}})
        pq.write_table(table, root / "data" / f"{split}-00000-of-00001.parquet")
    return root


def write_slake(root: Path, images: int = 24) -> Path:
    """imgs/xmlabN/{source.jpg, mask.png, detection.json} and train/validate/test.json (SLAKE's layout)."""
    splits: dict[str, list] = {"train": [], "validate": [], "test": []}
    qid = 0
    for i in range(images):
        side = "left" if i % 2 else "right"
        folder = root / "imgs" / f"xmlab{i}"
        folder.mkdir(parents=True)
        (folder / "source.jpg").write_bytes(picture(200 + i, side, "JPEG"))
        (folder / "mask.png").write_bytes(blob_mask(side))
        cx = SIZE * (0.3 if side == "left" else 0.7)
        (folder / "detection.json").write_text(json.dumps([{"Lesion": [cx - 12, SIZE / 2 - 12, 24, 24]}]))
        split = "test" if i >= images - 6 else "validate" if i >= images - 8 else "train"
        for q in _questions(i, side):
            splits[split].append({"qid": qid, "img_name": f"xmlab{i}/source.jpg", "q_lang": "en", **q,
                                  "location": "Chest", "modality": "CT", "base_type": "vqa"})
            qid += 1
    for split, entries in splits.items():
        (root / f"{split}.json").write_text(json.dumps(entries))
    return root


LAYOUTS = {"hf_vqa": write_hf_vqa, "slake": write_slake, "iu_xray": write_iu_xray, "mimic_cxr": write_mimic_cxr}
