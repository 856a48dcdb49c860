"""MIMIC-CXR style: files/pXX/pSUBJECT/sSTUDY.txt reports, sSTUDY/*.jpg images, CheXpert/split/metadata CSVs."""
import gzip

import pytest

from medpo_ray.data.sources import detect_kind
from medpo_ray.data.sources.mimic_cxr import CHEXPERT_COLUMNS, MimicCXRSource, report_sections
from tests.unit.data.layouts import image

pytestmark = pytest.mark.unit

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows.

 IMPRESSION:

 No acute cardiopulmonary process.
"""


def _study(root, subject, study, text, dicoms):
    folder = root / "files" / f"p{subject[:2]}" / f"p{subject}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"s{study}.txt").write_bytes(text if isinstance(text, bytes) else text.encode())
    for n, dicom_id in enumerate(dicoms):
        (folder / f"s{study}").mkdir(exist_ok=True)
        (folder / f"s{study}" / f"{dicom_id}.jpg").write_bytes(image(36, 30, fmt="JPEG", seed=n))


@pytest.fixture
def mimic(tmp_path):
    _study(tmp_path, "10000032", "50414267", REPORT, ["02aa804e-bde0afdd", "174413ec-4ec4c1f7"])
    _study(tmp_path, "10000032", "53189527", "FINDINGS: Small right effusion.\nIMPRESSION: Effusion.", ["2a2277a9-b0ded155"])
    _study(tmp_path, "10000764", "57375967", "FINDINGS: Heart is enlarged.", ["096052b7-d256dc40"])
    _study(tmp_path, "10000898", "50771383", b"FINDINGS: \xff\xfe broken", ["0c4eb1e1"])
    _study(tmp_path, "10000935", "51178377", "WET READ: no findings section here", ["1f1f"])
    _study(tmp_path, "10000980", "54577367", "IMPRESSION: Normal.", [])
    header = ["subject_id", "study_id", *CHEXPERT_COLUMNS]
    rows = [
        ["10000032", "50414267"] + ["" if c != "No Finding" else "1.0" for c in CHEXPERT_COLUMNS],
        ["10000032", "53189527"] + [{"Pleural Effusion": "1.0", "Pneumothorax": "0.0", "Edema": "-1.0"}.get(c, "")
                                    for c in CHEXPERT_COLUMNS],
        ["10000764", "57375967"] + [{"Cardiomegaly": "yes"}.get(c, "") for c in CHEXPERT_COLUMNS],
    ]
    with gzip.open(tmp_path / "mimic-cxr-2.0.0-chexpert.csv.gz", "wt", newline="") as f:
        f.write("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    with gzip.open(tmp_path / "mimic-cxr-2.0.0-split.csv.gz", "wt") as f:
        f.write("dicom_id,study_id,subject_id,split\n02aa804e-bde0afdd,50414267,10000032,train\n"
                "2a2277a9-b0ded155,53189527,10000032,validate\n096052b7-d256dc40,57375967,10000764,test\n")
    with gzip.open(tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz", "wt") as f:
        f.write("dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns\n"
                "02aa804e-bde0afdd,10000032,50414267,CHEST (PA AND LAT),LATERAL,30,36\n"
                "174413ec-4ec4c1f7,10000032,50414267,CHEST (PA AND LAT),PA,30,36\n")
    return tmp_path


def test_reports_labels_splits_and_view_choice(mimic):
    assert detect_kind(mimic) == "mimic_cxr"
    result = MimicCXRSource(mimic).load()
    by_id = {r.record_id: r for r in result.records}
    assert sorted(by_id) == ["s50414267", "s53189527"]
    r = by_id["s50414267"]
    assert r.target == ("Findings: There is no focal consolidation, pleural effusion or pneumothorax. Bilateral "
                        "nodular opacities that most likely represent nipple shadows.\n"
                        "Impression: No acute cardiopulmonary process.")
    assert r.findings == {"no_finding": {"present": True, "side": None, "severity": None}}
    # The metadata CSV says the second image is the PA view: it is chosen over the lateral one.
    assert r.meta["view"] == "PA" and r.meta["image_path"].endswith("s50414267/174413ec-4ec4c1f7.jpg")
    assert r.image == image(36, 30, fmt="JPEG", seed=1) and r.split == "train"
    e = by_id["s53189527"]
    assert e.split == "val"
    # 1 -> present, 0 -> absent, -1 -> uncertain (None), blank -> not mentioned (absent from the dict).
    assert e.findings == {"edema": {"present": None, "side": None, "severity": None},
                          "pleural_effusion": {"present": True, "side": None, "severity": None},
                          "pneumothorax": {"present": False, "side": None, "severity": None}}


def test_bad_studies_are_named(mimic):
    bad = {b.record_id: (b.field, b.reason) for b in MimicCXRSource(mimic).load().bad}
    assert bad["s57375967"] == ("chexpert.Cardiomegaly", "value 'yes' is not 1, 0, -1 or blank")
    assert bad["s50771383"] == ("report", "not valid UTF-8 (byte 0xff at offset 10)")
    assert bad["s51178377"] == ("report", "has no FINDINGS or IMPRESSION section")
    assert bad["s54577367"][0] == "image" and "no image in" in bad["s54577367"][1]
    assert len(bad) == 4


def test_split_filter_and_missing_label_csv(mimic):
    assert [r.record_id for r in MimicCXRSource(mimic, split="val").load().records] == ["s53189527"]
    (mimic / "mimic-cxr-2.0.0-chexpert.csv.gz").unlink()
    result = MimicCXRSource(mimic, split="val").load()
    assert result.records[0].findings is None
    assert [b.field for b in result.bad] == ["file"] and "no CheXpert label CSV" in result.bad[0].reason


def test_report_sections():
    assert report_sections("FINDINGS AND IMPRESSION: Clear.\nNOTIFICATION: called") == {
        "FINDINGS AND IMPRESSION": "Clear.", "NOTIFICATION": "called"}
