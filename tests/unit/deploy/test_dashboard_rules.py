"""The Grafana dashboard and the Prometheus rules/config reference only metrics the code exports, and
Prometheus' own promtool accepts them (syntax, rule unit tests, scrape config)."""
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from medpo_ray.metrics import SPECS, exported_names
from tests.integration.promstack import PROMTOOL, require_binary

pytestmark = pytest.mark.unit

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
DASHBOARD = DEPLOY / "grafana/medpo-ray.json"
RULES = DEPLOY / "prometheus/rules.yaml"
# Grafana's built-in interval variables, replaced by what Grafana would put there.
GRAFANA_BUILTINS = {"$__rate_interval": "1m", "$__interval": "30s", "$__range": "1h"}
ALERTS = {"MedpoLearnerStalled", "MedpoQueueSaturated", "MedpoCriticRejectionHigh", "MedpoLogprobMismatch",
          "MedpoCheckpointTooOld", "MedpoPolicyWorseThanWarmStart"}


def promtool(*args: str) -> subprocess.CompletedProcess:
    """Run promtool; it must be installed (`make setup-test`), never skipped."""
    return subprocess.run([require_binary(PROMTOOL), *args], capture_output=True, text=True, timeout=60)


def metric_names(expr: str) -> set[str]:
    """The medpo series names a PromQL expression reads (quoted label values are not names)."""
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return {t for t in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", unquoted) if "medpo" in t}


def dashboard_queries() -> dict[str, str]:
    """Panel title (with target ref) -> PromQL, Grafana variables substituted."""
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"] for v in dash["templating"]["list"]}
    panels = [p for top in dash["panels"] for p in [top, *top.get("panels", [])] if p["type"] != "row"]
    queries = {}
    for p in panels:
        assert p["targets"], f"panel {p['title']!r} has no query"
        for t in p["targets"]:
            expr = t["expr"]
            for var, value in GRAFANA_BUILTINS.items():
                expr = expr.replace(var, value)
            for var in re.findall(r"\$(\w+)", expr):
                assert var in variables, f"panel {p['title']!r} uses undefined variable ${var}"
                expr = expr.replace(f"${var}", ".*")
            queries[f"{p['title']} [{t['refId']}]"] = expr
    return queries


def alert_rules() -> dict[str, str]:
    """Alert name -> expression, from deploy/prometheus/rules.yaml."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r["expr"] for g in groups for r in g["rules"]}


def test_name_extraction_sees_names_and_ignores_label_values():
    expr = 'sum by (stage) (rate(ray_medpo_stage_seconds_bucket{stage="medpo_x"}[1m])) / ray_medpo_nope'
    assert metric_names(expr) == {"ray_medpo_stage_seconds_bucket", "ray_medpo_nope"}
    assert not metric_names(expr) <= exported_names()  # a bogus name is caught
    assert not {"ray_medpo_stage_seconds"} <= exported_names()  # so is a histogram's bare name


def test_every_dashboard_query_reads_only_exported_metrics():
    for title, expr in dashboard_queries().items():
        names = metric_names(expr)
        assert names, f"{title}: no medpo metric in {expr!r}"
        assert names <= exported_names(), f"{title}: not exported: {names - exported_names()}"


def test_dashboard_shows_every_metric_and_every_metric_group():
    used = set().union(*map(metric_names, dashboard_queries().values()))
    for s in SPECS:
        assert used & set(s.series()), f"no panel shows {s.name}"
    rows = [p["title"].lower() for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] == "row"]
    for group in ("throughput", "queue", "loss", "reward accuracy", "staleness", "weight sync", "critic",
                  "bad records"):
        assert any(group in r for r in rows), f"no dashboard row for {group}"


def test_dashboard_queries_are_valid_promql(tmp_path):
    # promtool has no expression checker of its own; recording rules get the full PromQL parse.
    rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(dashboard_queries().values())]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_alert_rules_cover_the_five_alerts_and_read_only_exported_metrics():
    rules = alert_rules()
    assert set(rules) == ALERTS
    for name, expr in rules.items():
        assert metric_names(expr) and metric_names(expr) <= exported_names(), name


def test_promtool_accepts_the_rules_and_their_unit_tests():
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0 and f"{len(ALERTS)} rules found" in checked.stdout, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(DEPLOY / "prometheus/rules_test.yaml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    tested_alerts = set(re.findall(r"alertname: (\w+)", (DEPLOY / "prometheus/rules_test.yaml").read_text()))
    assert tested_alerts == ALERTS


def test_promtool_accepts_the_plain_ray_scrape_config():
    done = promtool("check", "config", str(DEPLOY / "prometheus/scrape-ray.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load((DEPLOY / "prometheus/scrape-ray.yaml").read_text())
    [job] = config["scrape_configs"]
    assert job["file_sd_configs"][0]["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"]
