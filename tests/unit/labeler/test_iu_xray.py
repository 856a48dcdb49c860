"""The labeler on real IU-Xray reports against their MeSH tags (human indexing: an independent reference).

The reports come from the optional `torchxrayvision` package; without it this test is skipped.
"""
import pytest

from medpo_ray.labeler.iu_xray import IUXrayUnavailable, evaluate, format_table, iter_reports, reports_archive

pytestmark = pytest.mark.unit

# At or above what a ~30-line rule labeler scored on the same reports (shared/design/DATA.md).
FLOORS = {"pleural_effusion": (0.89, 0.91), "cardiomegaly": (0.93, 0.82), "atelectasis": (0.94, 0.88),
          "pneumothorax": (0.83, 0.85)}


def test_precision_recall_against_mesh_tags():
    try:
        archive = reports_archive()
    except IUXrayUnavailable as e:
        pytest.skip(str(e))
    n, scores = evaluate(iter_reports(archive))
    print("\n" + format_table(n, scores))
    assert n > 3900
    for finding, (p, r) in FLOORS.items():
        s = scores[finding]
        assert s.precision >= p and s.recall >= r, (finding, s)
    assert scores["pleural_effusion"].side_agree / scores["pleural_effusion"].side_total > 0.8
