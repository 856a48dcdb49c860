"""IU-Xray / OpenI: ecgen-radiology/N.xml reports and NLMCXR_png/ images."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medpo_ray.data.reports import REPORT_PROMPT
from medpo_ray.data.sources import detect_kind
from medpo_ray.data.sources.files import hashed_split
from medpo_ray.data.sources.iu_xray import IUXraySource, parse_mesh
from tests.unit.data.layouts import image

pytestmark = pytest.mark.unit


def _xml(uid, findings, impression, mesh, images, automatic=()):
    """An eCitation report with the element structure of the OpenI release."""
    texts = "".join(f'<AbstractText Label="{label}">{text}</AbstractText>' for label, text in
                    (("COMPARISON", "None."), ("INDICATION", "Cough"), ("FINDINGS", findings), ("IMPRESSION", impression))
                    if text is not None)
    majors = "".join(f"<major>{m}</major>" for m in mesh) + "".join(f"<automatic>{a}</automatic>" for a in automatic)
    parents = "".join(f'<parentImage id="{i}"><figureId>F1</figureId><caption>Xray Chest PA and Lateral</caption>'
                      f"<panel type=\"single\"><url>/hadoop/storage/radiology/extract/{i}.jpg</url></panel></parentImage>"
                      for i in images)
    return (f'<?xml version="1.0" encoding="utf-8"?><eCitation><meta type="rr"/><uId id="{uid}"/><pmcId id="{uid[3:]}"/>'
            f"<docSource>CXR</docSource><IUXRId id=\"{uid[3:]}\"/><licenseType>open-access</licenseType>"
            f"<MedlineCitation Owner=\"Indiana University\" Status=\"supplied by publisher\"><Article PubModel=\"Electronic\">"
            f"<ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle><Abstract>{texts}</Abstract>"
            f"</Article></MedlineCitation><MeSH>{majors}</MeSH>{parents}</eCitation>")


@pytest.fixture
def iu(tmp_path):
    reports, pngs = tmp_path / "ecgen-radiology", tmp_path / "NLMCXR_png"
    reports.mkdir()
    pngs.mkdir()
    for name in ("CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001", "CXR2_1_IM-0652-1001", "CXR4_1_IM-2050-1001"):
        pngs.joinpath(f"{name}.png").write_bytes(image(48, 40, seed=len(name)))
    (reports / "1.xml").write_text(_xml("CXR1", "The cardiac silhouette and mediastinum size are within normal limits.",
                                        "Normal chest x-XXXX.", ["normal"], ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]))
    (reports / "2.xml").write_text(_xml(
        "CXR2", "Small left pleural effusion. Borderline cardiomegaly. Bibasilar opacities.", "Left effusion.",
        ["Pleural Effusion/left/small", "Cardiomegaly/borderline", "Opacity/lung/base/left/mild", "Opacity/lung/base/right"],
        ["CXR2_1_IM-0652-1001"], automatic=["Pleural Effusion"]))
    (reports / "3.xml").write_text(_xml("CXR3", "Clear lungs.", None, ["normal"], ["CXR3_1_IM-1384-1001"]))
    (reports / "4.xml").write_text(_xml("CXR4", None, None, ["normal"], ["CXR4_1_IM-2050-1001"]))
    (reports / "5.xml").write_text("<eCitation><uId id='CXR5'/><Abstract>")
    (reports / "6.xml").write_text(_xml("CXR6", "Heart normal.", "No acute disease.", ["normal"], []))
    return tmp_path


def test_reports_become_records_with_mesh_findings(iu):
    assert detect_kind(iu) == "iu_xray"
    result = IUXraySource(iu).load()
    by_id = {r.record_id: r for r in result.records}
    assert sorted(by_id) == ["CXR1", "CXR2"]
    r1 = by_id["CXR1"]
    assert (r1.task, r1.prompt, r1.split) == ("report", REPORT_PROMPT, hashed_split("CXR1"))
    assert r1.target == ("Findings: The cardiac silhouette and mediastinum size are within normal limits.\n"
                         "Impression: Normal chest x-XXXX.")
    assert r1.findings == {} and r1.image == image(48, 40, seed=len("CXR1_1_IM-0001-3001"))
    assert r1.meta["image_path"] == "NLMCXR_png/CXR1_1_IM-0001-3001.png" and r1.meta["indication"] == "Cough"
    r2 = by_id["CXR2"]
    assert r2.findings == {
        "pleural_effusion": {"present": True, "side": "left", "severity": "small", "qualifiers": []},
        "cardiomegaly": {"present": True, "side": None, "severity": "borderline", "qualifiers": []},
        "opacity": {"present": True, "side": "bilateral", "severity": "mild", "qualifiers": ["lung", "base"]},
    }
    assert r2.meta["mesh_automatic"] == ["Pleural Effusion"]


def test_bad_reports_are_named(iu):
    bad = {b.record_id: (b.field, b.reason) for b in IUXraySource(iu).load().bad}
    assert bad["CXR3"] == ("image", "none of the report's images found under the root: CXR3_1_IM-1384-1001")
    assert bad["CXR4"] == ("report", "has no FINDINGS or IMPRESSION text")
    assert bad["5"][0] == "xml" and "5.xml is not well-formed XML" in bad["5"][1]
    assert bad["CXR6"] == ("image", "report lists no images (no parentImage element)")
    assert len(bad) == 4


def test_mesh_parsing_against_hand_labels():
    assert parse_mesh(["normal"]) == {}
    assert parse_mesh(["Pneumothorax/right/large", "Calcified Granuloma/lung/upper lobe/right"]) == {
        "pneumothorax": {"present": True, "side": "right", "severity": "large", "qualifiers": []},
        "calcified_granuloma": {"present": True, "side": "right", "severity": None, "qualifiers": ["lung", "upper lobe"]},
    }


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300), st.lists(st.text(max_size=30), max_size=5))
def test_arbitrary_report_files_and_mesh_terms_never_raise(tmp_path_factory, blob, terms):
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "1.xml").write_bytes(b"<eCitation>" + blob)
    (record_or_bad,) = list(IUXraySource(folder))
    assert record_or_bad.record_id
    assert isinstance(parse_mesh(terms), dict)


def test_hashed_split_is_stable_and_has_the_stated_shares():
    splits = [hashed_split(f"CXR{i}") for i in range(20000)]
    shares = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert abs(shares["train"] - 0.7) < 0.015 and abs(shares["val"] - 0.1) < 0.01 and abs(shares["test"] - 0.2) < 0.015
    assert hashed_split("CXR1") == hashed_split("CXR1")
