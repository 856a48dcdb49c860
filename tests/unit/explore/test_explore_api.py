"""The explorer's API over a run directory: what it serves, what it refuses, and the review log."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from starlette.testclient import TestClient

from medpo_ray.corruption.codec import decode_image
from medpo_ray.explore.app import create_app
from medpo_ray.explore.reviews import ReviewLog, marked_wrong
from tests.unit.explore.conftest import HOSTILE

pytestmark = pytest.mark.unit


@pytest.fixture
def client(run_dir, tmp_path):
    run, _ = run_dir
    (run / "reviews.jsonl").unlink(missing_ok=True)
    with TestClient(create_app(run)) as c:
        yield c


def test_overview_has_curves_rejections_and_config(client):
    o = client.get("/api/overview").json()
    assert o["curves"]["loss"] == [[1, pytest.approx(0.6)], [2, pytest.approx(0.5)]]
    assert o["curves"]["pairs_per_s"] == [[1, 1.5], [2, 1.5]]  # pairs / step_s
    assert o["rejections"][0] == [1, {"editor:unreadable": 1}]
    assert o["config"]["corruption"] == {"mode": "noise"} and o["audit_steps"] == [1, 2]


def test_pairs_filter_by_step_branch_kind_and_reason(client, run_dir):
    _, records = run_dir
    everything = client.get("/api/pairs", params={"show": ""}).json()
    assert len(everything["rows"]) == 8 and everything["options"]["reasons"] == ["editor:unreadable"]
    assert len(client.get("/api/pairs", params={"show": "pairs", "step": "2"}).json()["rows"]) == 3
    assert len(client.get("/api/pairs", params={"show": "pairs", "kind": "presence", "branch": "B"}).json()["rows"]) == 6
    found = client.get("/api/pairs", params={"show": "", "q": records[2].record_id.upper()}).json()["rows"]
    assert [(r["step"], r["record_id"]) for r in found] == [(1, records[2].record_id), (2, records[2].record_id)]
    assert len(client.get("/api/pairs", params={"show": "", "q": "PRESENCE"}).json()["rows"]) == 6
    assert client.get("/api/pairs", params={"show": "", "q": "no such finding"}).json()["rows"] == []
    rejected = client.get("/api/pairs", params={"show": "rejected"}).json()["rows"]
    assert [(r["record_id"], r["rejection"]) for r in rejected] == [(records[3].record_id, "editor:unreadable")] * 2


def test_pair_view_and_images(client, run_dir):
    _, records = run_dir
    r = records[1]
    pair = client.get(f"/api/pair/1/{r.record_id}").json()
    assert pair["y_plus"] == r.target and pair["y_minus"] == "Za" + r.target[2:] and pair["spans_plus"] == [[0, 2]]
    assert pair["prompt"] == r.prompt and pair["has_image"]
    x = client.get(f"/img/1/x/{r.record_id}")
    xt = client.get(f"/img/1/xt/{r.record_id}")
    assert x.headers["content-type"] == "image/png" and xt.headers["content-type"] == "image/png"
    clean, overlay, corrupted = decode_image(r.image), decode_image(x.content), decode_image(xt.content)
    lesion = decode_image(r.lesion_mask) > 0 if r.lesion_mask is not None else None
    if lesion is not None and lesion.any():  # red where the lesion is, the image itself elsewhere
        assert (overlay[lesion][:, 0] > overlay[lesion][:, 2]).all()
        assert np.array_equal(overlay[~lesion][:, 0], clean[~lesion])
    assert corrupted.shape == clean.shape and not np.array_equal(corrupted, clean)


def test_untrusted_text_is_data_and_the_page_forbids_inline_script(client, run_dir):
    _, records = run_dir
    resp = client.get(f"/api/pair/1/{records[0].record_id}")
    assert resp.headers["content-type"] == "application/json" and resp.json()["y0"] == HOSTILE
    page = client.get("/")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "<script>" not in page.text.replace('<script src="/static/app.js" defer></script>', "")
    js = client.get("/static/app.js").text
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "document.write" not in js


@pytest.mark.parametrize("path", ["/static/../config.yaml", "/static/..%2fconfig.yaml", "/static/reviews.jsonl",
                                  "/../config.yaml", "/api/pair/1/..%2f..%2fconfig.yaml", "/img/1/x/../../etc/passwd",
                                  "/config.yaml", "/metrics.jsonl", "/api/pair/x/1", "/img/1/mask/anything"])
def test_nothing_outside_the_pages_own_files_and_the_runs_rows_is_served(client, path):
    assert client.get(path).status_code == 404


def test_a_token_is_required_when_set(run_dir):
    run, _ = run_dir
    with TestClient(create_app(run, token="t" * 20)) as c:
        assert c.get("/api/overview").status_code == 401
        assert c.get("/api/overview", headers={"Authorization": "Bearer " + "t" * 20}).status_code == 200
        assert c.get("/", params={"token": "t" * 20}).status_code == 200
        assert c.get("/api/overview").status_code == 200  # the cookie the page got


def test_reviews_persist_validate_and_summarise(client, run_dir):
    run, records = run_dir
    rid = records[1].record_id
    assert client.post("/api/reviews", json={"step": 1, "record_id": rid, "mark": "critic_wrong",
                                             "reviewer": "dr a", "note": "<b>not</b> a lesion"}).status_code == 200
    assert client.post("/api/reviews", json={"step": 1, "record_id": rid, "mark": "critic_right",
                                             "reviewer": "dr b"}).json()["summary"]["critic_precision"] == 0.5
    assert client.post("/api/reviews", json={"step": 1, "record_id": rid, "mark": "maybe",
                                             "reviewer": "dr b"}).status_code == 400
    assert client.post("/api/reviews", json={"step": 9, "record_id": rid, "mark": "critic_right",
                                             "reviewer": "dr b"}).status_code == 404
    with TestClient(create_app(run)) as again:  # a restarted server reads every mark back
        marks = again.get(f"/api/pair/1/{rid}").json()["marks"]
        assert {(m["reviewer"], m["mark"], m["note"]) for m in marks} == {
            ("dr a", "critic_wrong", "<b>not</b> a lesion"), ("dr b", "critic_right", "")}
    assert marked_wrong([run]) == {rid}


def test_two_reviewers_at_once_lose_nothing(run_dir, tmp_path):
    log = ReviewLog(tmp_path)

    def reviewer(name):
        for i in range(200):
            log.add(1, f"rec-{i}", "critic_right" if i % 3 else "critic_wrong", name, "x" * (i % 50))

    threads = [threading.Thread(target=reviewer, args=(f"dr {k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (tmp_path / "reviews.jsonl").read_text().splitlines()
    assert len(lines) == 800 and all(json.loads(line) for line in lines)
    assert log.summary()["marks"] == 800 and log.summary()["critic_wrong"] == 4 * 67


def test_a_later_run_leaves_out_records_marked_critic_wrong(tmp_path):
    from driver.launch import _without_reviewed_wrong
    from medpo_ray.config import Config
    from medpo_ray.errors import MedpoError

    reviewed = tmp_path / "run-a"
    reviewed.mkdir()
    log = ReviewLog(reviewed)
    log.add(1, "r1", "critic_wrong", "dr a")
    log.add(1, "r2", "critic_wrong", "dr a")
    log.add(2, "r2", "critic_right", "dr a")  # another step's pair of r2: r2's step-1 mark still stands
    log.add(1, "r3", "critic_right", "dr b")
    records = {k: object() for k in ("r1", "r2", "r3", "r4")}
    cfg = Config.model_validate({"train": {"exclude_reviewed": [str(reviewed)]}})
    assert set(_without_reviewed_wrong(cfg, records)) == {"r3", "r4"}
    assert _without_reviewed_wrong(Config(), records) is records
    with pytest.raises(MedpoError, match="train.exclude_reviewed"):
        _without_reviewed_wrong(Config.model_validate({"train": {"exclude_reviewed": [str(tmp_path)]}}), records)
