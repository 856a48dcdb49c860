"""The labeler on reports of the embedded grammar, checked against the structured findings they were
rendered from (an independent reference: the generator never calls the labeler)."""
import numpy as np
import pytest

from medpo_ray.data.reports import render_report
from medpo_ray.labeler import label

pytestmark = pytest.mark.unit


def _findings(rng):
    lesions = []
    for side in ("right", "left"):
        for _ in range(int(rng.integers(0, 4))):
            d = int(rng.integers(3, 40))
            lesions.append({"side": side, "diameter_mm": d, "size": "small" if d < 10 else "moderate" if d < 20
                            else "large"})
    lesions = lesions[:3]
    noun, region = [("nodule", "lung"), ("lesion", "paraspinal region"), ("lesion", "hemiabdomen")][
        int(rng.integers(3))]
    count = {s: sum(les["side"] == s for les in lesions) for s in ("right", "left")}
    return {"noun": noun, "region": region, "count": count, "total": len(lesions), "lesions": lesions}


def test_claims_match_the_findings_the_report_was_rendered_from():
    rng = np.random.default_rng(11)
    for _ in range(300):
        f = _findings(rng)
        text = render_report(f, rng)
        impression = text.index("IMPRESSION:")
        claims = [c for c in label(text) if c.finding == f["noun"]]
        assert len(claims) == len(label(text)), text  # nothing but the study's noun is claimed
        findings = [c for c in claims if c.mention.start < impression]
        assert sorted(c.side.value for c in findings) == ["left", "right"], text
        for c in findings:
            side_lesions = [les for les in f["lesions"] if les["side"] == c.side.value]
            assert (c.status == "present") == bool(side_lesions), text
            assert text[c.side.span.start:c.side.span.end] == c.side.value
            if side_lesions:
                assert c.count.value == len(side_lesions), text
                assert c.measurement.value in [les["diameter_mm"] for les in side_lesions], text
                assert c.severity.value in [les["size"] for les in side_lesions], text
        for c in claims[len(findings):]:
            n = f["count"][c.side.value] if c.side else f["total"]
            assert (c.status == "present") == (n > 0), text
            if c.status == "present":
                assert c.count.value == n and c.measurement is None, text
