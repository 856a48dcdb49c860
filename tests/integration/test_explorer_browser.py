"""The run explorer in a real browser (Debian's headless Chromium, driven by Selenium) over a run of the
real pipeline: the pair view shows both images and the highlighted spans, a review mark survives a server
restart, an answer holding <script> stays text, and a path out of the run gets 404."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.integration.promstack import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def run(pipeline_setup):
    """A two-step run of the real pipeline; one answer of its audit then rewritten to hold markup, as a
    policy could write it (the tiny policy will not on demand)."""
    config = pipeline_setup.write("explore", train={"steps": 2}, guard={"every": 0})
    done = subprocess.run([sys.executable, "-m", "driver.cli", "train", "--config", str(config)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = pipeline_setup.root / "runs" / "explore"
    table = pq.read_table(out / "audit" / "step-000001.parquet")
    rows = table.to_pylist()
    victim = next((i for i, r in enumerate(rows) if not r["branch"]), 0)  # a rejected prompt if there is one
    rows[victim]["y0"] = HOSTILE
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), out / "audit" / "step-000001.parquet")
    return out, rows[victim]["record_id"]


class Server:
    """`medpo-ray explore` as a user starts it."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.port = run_dir, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "driver.cli", "explore", "--run", str(self.run_dir),
                                      "--port", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.proc.stderr.read().decode()[-2000:]
            try:
                urllib.request.urlopen(self.base + "/api/overview", timeout=2)
                return
            except OSError:
                assert time.monotonic() < deadline, "explorer not up after 60 s"
                time.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM and CHROMEDRIVER, "Debian's chromium and chromium-driver are installed by `make test`'s set-up"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def _wait(driver, condition, timeout: float = 20.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def _open_pair(driver, base: str, record_id: str | None = None, show: str = "pairs", avoid: str = ""):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(base + "/")
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#pair-list tbody tr"))
    if show != "pairs":  # "" shows every prompt of the run, pairs and rejections
        Select(driver.find_element(By.NAME, "show")).select_by_value(show)
        _wait(driver, lambda d: any(r.get_attribute("data-record") == record_id
                                    for r in d.find_elements(By.CSS_SELECTOR, "#pair-list tbody tr")))
    rows = driver.find_elements(By.CSS_SELECTOR, "#pair-list tbody tr")
    row = next(r for r in rows if (record_id is None and r.get_attribute("data-record") != avoid)
               or r.get_attribute("data-record") == record_id)
    chosen = row.get_attribute("data-record")
    row.click()
    _wait(driver, lambda d: d.find_element(By.ID, "pv-title").text.endswith(chosen))
    return chosen


def _loaded(driver, element_id: str) -> bool:
    return driver.execute_script(
        "const i = document.getElementById(arguments[0]); return i.complete && i.naturalWidth > 0;", element_id)


def test_the_explorer_in_a_real_browser(run, browser, tmp_path):
    from selenium.webdriver.common.by import By

    run_dir, hostile_id = run
    server = Server(run_dir)
    server.start()
    try:
        # Overview: a curve per logged metric, the config.
        browser.get(server.base + "/")
        _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "svg[data-curve=loss] polyline"))
        assert browser.find_elements(By.CSS_SELECTOR, "svg[data-curve=pairs_per_s] polyline")
        _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#pair-list tbody tr"))  # filters filled
        browser.find_element(By.CSS_SELECTOR, "#step-links a[data-step='2']").click()  # into step 2's pairs
        _wait(browser, lambda d: {r.get_attribute("data-step") for r in
                                  d.find_elements(By.CSS_SELECTOR, "#pair-list tbody tr")} == {"2"})
        # Pair view: both images decoded by the browser, the edited spans highlighted on both sides.
        chosen = _open_pair(browser, server.base, avoid=hostile_id)
        _wait(browser, lambda d: _loaded(d, "pv-x") and _loaded(d, "pv-xt"))
        plus = browser.find_elements(By.CSS_SELECTOR, "#pv-yplus mark.plus")
        minus = browser.find_elements(By.CSS_SELECTOR, "#pv-yminus mark.minus")
        assert plus and minus and all(m.text for m in plus + minus)
        rows = [r for f in sorted((run_dir / "audit").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
        row = next(r for r in rows if r["record_id"] == chosen and r["branch"])
        assert [m.text for m in plus] == [row["y_plus"][a:b] for a, b in json.loads(row["spans_plus"])]
        browser.execute_script("document.getElementById('pairs').scrollIntoView()")
        browser.save_screenshot(str(tmp_path / "explorer.png"))
        if os.environ.get("MEDPO_EXPLORER_SCREENSHOT"):
            shutil.copy(tmp_path / "explorer.png", os.environ["MEDPO_EXPLORER_SCREENSHOT"])
        # A review mark, then a restarted server and a reloaded page: the mark is there.
        browser.find_element(By.NAME, "reviewer").send_keys("dr browser")
        browser.find_element(By.NAME, "note").send_keys("the lesion is on the other side")
        browser.find_element(By.CSS_SELECTOR, "button[data-mark=critic_wrong]").click()
        _wait(browser, lambda d: "dr browser" in d.find_element(By.ID, "pv-marks").text)
        server.stop()
        server.start()
        _open_pair(browser, server.base, chosen)
        _wait(browser, lambda d: "dr browser: critic wrong — the lesion is on the other side"
              in d.find_element(By.ID, "pv-marks").text)
        assert "precision" in browser.find_element(By.ID, "review-summary").text
        # An answer holding markup is shown as text and runs nothing.
        _open_pair(browser, server.base, hostile_id, show="")
        assert browser.find_element(By.ID, "pv-y0").text == HOSTILE
        assert browser.title == "medpo-ray run explorer"
        assert not browser.find_elements(By.CSS_SELECTOR, "#pv-y0 script, #pv-y0 img")
        # Nothing outside the run is served.
        for path in ("/static/..%2f..%2fconfig.yaml", "/img/1/x/..%2f..%2f..%2fetc%2fpasswd", "/reviews.jsonl"):
            browser.get(server.base + path)
            assert "not found" in browser.find_element(By.TAG_NAME, "body").text.lower()
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(server.base + path)
            assert e.value.code == 404
    finally:
        server.stop()
