"""Box CSVs: VinDr-CXR (annotations/annotations_train.csv + train/<image_id>.dicom) and MS-CXR."""
import io
import shutil

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medpo_ray.data.sources import detect_kind
from medpo_ray.data.sources.box_csv import MS_CXR_PROMPT, BoxCSVSource
from medpo_ray.data.sources.files import dicom_to_png
from tests.unit.data.layouts import image, size_of

pytestmark = pytest.mark.unit

CT = get_testdata_file("CT_small.dcm")  # 128x128 MONOCHROME2, ships with pydicom


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im)


@pytest.fixture
def vindr(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "train").mkdir()
    shutil.copy(CT, tmp_path / "train" / "000434271f63a053c4128a0ba6352c7f.dicom")
    (tmp_path / "train" / "00053190460d56c53cc3e57321387478.png").write_bytes(image(128, 128))
    (tmp_path / "train" / "0005e8e3701dfb1dd93d53e2ff537b6e.dicom").write_bytes(b"\0" * 128 + b"DICM" + b"junk" * 10)
    (tmp_path / "annotations" / "annotations_train.csv").write_text(
        "image_id,rad_id,class_name,x_min,y_min,x_max,y_max\n"
        "000434271f63a053c4128a0ba6352c7f,R2,Cardiomegaly,40,70,100,110\n"
        "000434271f63a053c4128a0ba6352c7f,R3,Cardiomegaly,42,71,99,112\n"
        "000434271f63a053c4128a0ba6352c7f,R3,Pleural effusion,5,90,30,127\n"
        "000434271f63a053c4128a0ba6352c7f,R1,No finding,,,,\n"
        "00053190460d56c53cc3e57321387478,R1,No finding,,,,\n"
        "0005e8e3701dfb1dd93d53e2ff537b6e,R2,Nodule/Mass,10,10,20,20\n"
        "000ae00eb3942d27e0b97903dd563a6e,R2,Aortic enlargement,10,10,20,20\n"
        "0007d316f756b3fa0baea2ff514ce945,R9,Nodule/Mass,10,ten,20,20\n"
        "0007d316f756b3fa0baea2ff514ce945,R9,Nodule/Mass,10,10,20\n")
    return tmp_path


def test_vindr_images_become_report_records_with_every_radiologists_boxes(vindr):
    assert detect_kind(vindr) == "box_csv"
    result = BoxCSVSource(vindr).load()
    by_id = {r.record_id: r for r in result.records}
    assert sorted(by_id) == ["000434271f63a053c4128a0ba6352c7f", "00053190460d56c53cc3e57321387478"]
    r = by_id["000434271f63a053c4128a0ba6352c7f"]
    assert (r.task, r.split, r.target) == ("report", "train", "Findings: Cardiomegaly, Pleural effusion.")
    assert r.boxes == ((40, 70, 100, 110), (42, 71, 99, 112), (5, 90, 30, 127))
    assert set(r.findings) == {"cardiomegaly", "pleural_effusion"} and r.meta["rad_ids"] == ["R1", "R2", "R3"]
    assert size_of(r.image) == (128, 128)  # DICOM converted to PNG at its own size, so boxes still fit
    normal = by_id["00053190460d56c53cc3e57321387478"]
    assert (normal.target, normal.findings, normal.boxes) == ("No finding.", {}, ())


def test_vindr_bad_rows_are_named(vindr):
    bad = {b.record_id: (b.field, b.reason) for b in BoxCSVSource(vindr / "annotations" / "annotations_train.csv").load().bad}
    assert bad["0005e8e3701dfb1dd93d53e2ff537b6e"][0] == "image"
    assert bad["0005e8e3701dfb1dd93d53e2ff537b6e"][1].startswith("DICOM cannot be decoded")
    assert bad["000ae00eb3942d27e0b97903dd563a6e"][1].startswith("no image named '000ae00eb3942d27e0b97903dd563a6e'")
    assert bad["0007d316f756b3fa0baea2ff514ce945"] == ("y_min", "annotations_train.csv line 9: 'ten' is not a number")
    assert bad["annotations_train.csv:10"] == ("row", "6 cells, the header has 7")
    assert len(bad) == 4


def test_dicom_to_png_keeps_pixel_order_and_inverts_monochrome1(tmp_path):
    ds = pydicom.dcmread(CT)
    raw = ds.pixel_array.astype(np.int64)
    png = _pixels(dicom_to_png(open(CT, "rb").read()))
    assert png.shape == raw.shape and png.min() == 0 and png.max() == 255
    # Independent of the scaling used: brighter stored values never map to darker output pixels.
    assert np.all(np.diff(png.ravel()[np.argsort(raw.ravel(), kind="stable")].astype(int)) >= 0)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "m1.dcm")
    inverted = _pixels(dicom_to_png((tmp_path / "m1.dcm").read_bytes()))
    assert np.abs(inverted.astype(int) - (255 - png.astype(int))).max() <= 1


@pytest.fixture
def ms_cxr(tmp_path):
    study = tmp_path / "files" / "p10" / "p10233088" / "s54276838"
    study.mkdir(parents=True)
    (study / "675d792f-a3521e48.jpg").write_bytes(image(100, 80, fmt="JPEG"))  # a resized copy of 1000x800
    rel = "files/p10/p10233088/s54276838/675d792f-a3521e48.jpg"
    (tmp_path / "MS_CXR_Local_Alignment_v1.1.0.csv").write_text(
        "dicom_id,subject_id,study_id,category_name,label_text,path,x,y,w,h,image_width,image_height,split\n"
        f"675d792f-a3521e48,10233088,54276838,Pneumothorax,Small left apical pneumothorax,{rel},600,100,200,150,1000,800,test\n"
        f"675d792f-a3521e48,10233088,54276838,Pleural Effusion,\"Bilateral effusions, larger on the right\",{rel},100,500,300,200,1000,800,test\n"
        f"675d792f-a3521e48,10233088,54276838,Pleural Effusion,\"Bilateral effusions, larger on the right\",{rel},600,500,300,200,1000,800,test\n"
        "aaaa,1,2,Edema,Mild edema,../../../etc/passwd,1,1,2,2,10,10,train\n")
    return tmp_path


def test_ms_cxr_phrases_with_boxes_rescaled_to_the_image(ms_cxr):
    csv = ms_cxr / "MS_CXR_Local_Alignment_v1.1.0.csv"
    result = BoxCSVSource(csv).load()
    by_target = {r.target: r for r in result.records}
    assert sorted(by_target) == ["Bilateral effusions, larger on the right", "Small left apical pneumothorax"]
    p = by_target["Small left apical pneumothorax"]
    assert (p.prompt, p.split, p.study_id) == (MS_CXR_PROMPT, "test", "54276838")
    assert len(p.boxes) == 1 and p.boxes[0] == pytest.approx((60.0, 10.0, 80.0, 25.0))  # x,y,w,h at 1000x800 -> xyxy at 100x80
    assert p.findings == {"pneumothorax": {"present": True, "side": None, "severity": None}}
    assert len(by_target["Bilateral effusions, larger on the right"].boxes) == 2
    assert p.record_id.startswith("675d792f-a3521e48/")
    assert [r.record_id for r in BoxCSVSource(csv).load().records] == [r.record_id for r in result.records]
    (bad,) = result.bad
    assert bad.field == "path" and "escapes the dataset root" in bad.reason
    assert [r.split for r in BoxCSVSource(csv, split="train").load().records] == []


def test_dicom_pixel_limit_applies_before_decoding():
    from medpo_ray.data.validate import RecordError

    with pytest.raises(RecordError, match="128x128 DICOM has 16,384 pixels, over the limit of 100"):
        dicom_to_png(open(CT, "rb").read(), max_pixels=100)
