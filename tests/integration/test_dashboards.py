"""The monitoring of docker/: the Prometheus alert rules, the Grafana dashboard and their
provisioning in the compose demo are well-formed, and every metric they query is exported by a
running connector (a renamed metric would otherwise leave an empty panel or an alert that never
fires)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from harness import CdcProcess, wait_for, write_config
from prometheus_client.parser import text_string_to_metric_families
from rig import MariaDB, Osmem, free_port

from cdc.config.models import MetricsConfig
from cdc.metrics import Metrics

DOCKER = Path(__file__).resolve().parents[2] / "docker"
COMPOSE = DOCKER / "compose.yaml"
PROMETHEUS = DOCKER / "prometheus" / "prometheus.yml"
ALERTS = DOCKER / "prometheus" / "alerts.yml"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "cdc.json"
DATASOURCES = DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = DOCKER / "grafana" / "provisioning" / "dashboards" / "cdc.yml"

ALERT_NAMES = {
    "ConnectorDown",
    "ConnectorNotStreaming",
    "LagHigh",
    "LinkDegraded",
    "DeadLettersGrowing",
    "CheckpointStale",
    "VerifyMismatches",
}
PROMETHEUS_SERIES = {"up"}
"""Series Prometheus makes itself for every target: the only names not from the connector."""
SUFFIXES = ("", "_total", "_bucket", "_sum", "_count")
"""How prometheus_client names the series of a metric family (counters, histograms)."""

# -- reading the files -----------------------------------------------------------------------


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _yaml(ALERTS)["groups"] for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(DASHBOARD.read_bytes())
    return data


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that shows data (rows only group them), nested ones included."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def _dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """The PromQL of every panel target and of every query variable."""
    queries = [target["expr"] for panel in _panels(dashboard) for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text: str = query["query"] if isinstance(query, dict) else query
        # label_values(EXPR, label): only EXPR is PromQL.
        m = re.fullmatch(r"\s*label_values\(\s*(?:(.*),)?\s*\w+\s*\)\s*", text)
        if m is None:
            queries.append(text)
        elif m.group(1):
            queries.append(m.group(1))
    return queries


def _all_queries() -> dict[str, list[str]]:
    return {
        "alerts.yml": [rule["expr"] for rule in _rules()],
        "cdc.json": _dashboard_queries(_dashboard()),
    }


# -- metric names in PromQL ------------------------------------------------------------------

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left"}
_KEYWORDS |= {"group_right", "offset", "bool", "inf", "nan", "start", "end"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are no function or
    aggregation (followed by `(`), keyword, label name (inside `{}` or a `by (...)`-like list),
    string, duration or Grafana variable (inside `[]` or `{}`)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors and subqueries
    text = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # label lists
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        before = text[m.start() - 1] if m.start() else " "
        if before.isdigit() or before in ".$":  # 1e3, 0x1f, 5m, $variable
            continue
        if m.group().lower() in _KEYWORDS or text[m.end() :].lstrip().startswith("("):
            continue
        names.add(m.group())
    return names


def _referenced() -> dict[str, set[str]]:
    """Metric name -> the files whose queries select it."""
    found: dict[str, set[str]] = {}
    for source, queries in _all_queries().items():
        for expr in queries:
            for name in metric_names(expr):
                found.setdefault(name, set()).add(source)
    return found


def test_metric_names_are_found_in_promql() -> None:
    assert metric_names(
        'histogram_quantile(0.95, sum by (le) (rate(cdc_bulk_request_seconds_bucket{job=~"$job",'
        ' instance=~"$instance"}[$__rate_interval])))'
    ) == {"cdc_bulk_request_seconds_bucket"}
    assert metric_names(
        "cdc_checkpoint_age_seconds > 900 and on (job, instance)"
        " (increase(cdc_transactions_total[15m]) > 0 or cdc_replication_lag_seconds > 0)"
    ) == {"cdc_checkpoint_age_seconds", "cdc_transactions_total", "cdc_replication_lag_seconds"}
    assert metric_names('up{job="cdc"} == 0 or absent(up{job="cdc"})') == {"up"}
    assert metric_names("time() - (cdc_verify_last_pass_timestamp_seconds > 0)") == {
        "cdc_verify_last_pass_timestamp_seconds"
    }
    assert metric_names("sum(rate(cdc_x_sum[5m])) by (instance) / 1e3") == {"cdc_x_sum"}
    assert metric_names("cdc_dead_letters offset 1h") == {"cdc_dead_letters"}


# -- the files themselves --------------------------------------------------------------------


def test_alert_rules_are_complete() -> None:
    rules = _rules()
    names = [rule.get("alert") for rule in rules]
    assert len(names) == len(set(names)), names
    assert set(names) == ALERT_NAMES
    for rule in rules:
        what = rule["alert"]
        assert isinstance(rule.get("expr"), str) and rule["expr"].strip(), what
        assert re.fullmatch(r"(\d+[smhd])+", str(rule.get("for", ""))), what
        assert rule.get("labels", {}).get("severity") in ("critical", "warning", "info"), what
        annotations = rule.get("annotations", {})
        assert annotations.get("summary"), what
        # Every alert tells the operator what to run.
        assert "`cdc " in annotations.get("description", ""), what


def test_dashboard_panels_have_a_datasource_and_queries() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= set(variables)
    panels = list(_panels(dashboard))
    assert len(panels) >= 10
    rows = [panel for panel in dashboard["panels"] if panel["type"] == "row"]
    ids = [panel["id"] for panel in [*rows, *panels]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        what = panel["title"]
        assert panel.get("datasource", {}).get("type") == "prometheus", what
        assert panel.get("gridPos"), what
        targets = panel.get("targets", [])
        assert targets, what
        refs = [target["refId"] for target in targets]
        assert len(refs) == len(set(refs)), what
        for target in targets:
            assert target["expr"].strip(), what
            assert target.get("datasource", panel["datasource"])["type"] == "prometheus", what
            # Panels follow the variables, so that one connector can be picked out.
            assert '$job"' in target["expr"] and '$instance"' in target["expr"], what


def test_every_exported_metric_is_on_the_dashboard() -> None:
    """A metric added to cdc/metrics.py needs a panel (or this test says which one is missing)."""
    queried = {name for expr in _dashboard_queries(_dashboard()) for name in metric_names(expr)}
    families = {
        family.name
        for family in Metrics().registry.collect()
        if not family.name.endswith("_created")  # prometheus_client's creation timestamps
    }
    unseen = {f for f in families if not any(f + suffix in queried for suffix in SUFFIXES)}
    assert not unseen, f"metrics no dashboard panel shows: {sorted(unseen)}"


def _bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path (relative to docker/) of a service's bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            mounts[target] = source
    return mounts


def test_compose_runs_prometheus_and_grafana_with_the_files_of_the_repository() -> None:
    services = _yaml(COMPOSE)["services"]
    assert {"connector", "prometheus", "grafana"} <= set(services)
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    for name, service in services.items():
        for source in _bind_mounts(service).values():
            assert (DOCKER / source).exists(), f"{name} mounts {source}, which does not exist"
    prometheus = _bind_mounts(services["prometheus"])
    grafana = _bind_mounts(services["grafana"])
    assert (DOCKER / prometheus["/etc/prometheus/prometheus.yml"]).samefile(PROMETHEUS)
    assert (DOCKER / prometheus["/etc/prometheus/alerts.yml"]).samefile(ALERTS)
    assert (DOCKER / grafana["/etc/grafana/provisioning/datasources"]).samefile(DATASOURCES.parent)
    assert (DOCKER / grafana["/etc/grafana/provisioning/dashboards"]).samefile(PROVIDERS.parent)

    # Published ports: on localhost only, and none twice.
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert all(port.startswith("127.0.0.1:") for port in published), published
    host_ports = [port.split(":")[1] for port in published]
    assert len(host_ports) == len(set(host_ports)), published

    # Prometheus scrapes the connector service on its metrics port (the demo's connector.yaml
    # leaves `metrics` at its defaults) and loads the rules from the mounted alerts.yml.
    config = _yaml(PROMETHEUS)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [t for sc in jobs["cdc"]["static_configs"] for t in sc["targets"]]
    port = MetricsConfig().port
    assert targets == [f"connector:{port}", f"connector-standby:{port}"]
    assert "metrics" not in _yaml(DOCKER / "connector.yaml")
    for rule_file in config["rule_files"]:
        inside = str(Path("/etc/prometheus") / rule_file)
        assert (DOCKER / prometheus[inside]).samefile(ALERTS)
    assert all('job="cdc"' in rule["expr"] for rule in _rules() if "up{" in rule["expr"])

    # Grafana: the data source is that Prometheus, the dashboard's default data source, and
    # the provider reads the directory the dashboard is mounted in.
    (datasource,) = _yaml(DATASOURCES)["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == datasource["uid"]
    (provider,) = _yaml(PROVIDERS)["providers"]
    assert (DOCKER / grafana[provider["options"]["path"]]).samefile(DASHBOARD.parent)
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"


# -- promtool (when installed: apt-get install prometheus) -----------------------------------


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=60, check=False
    )


A = 'job="cdc", instance="a:9108"'
B = 'job="cdc", instance="b:9108"'
C = 'job="cdc", instance="c:9108"'


def _alert(*labels: str, **extra: str) -> dict[str, Any]:
    pairs = dict(re.findall(r'(\w+)="([^"]*)"', ", ".join(labels)))
    return {"exp_labels": {**pairs, **extra}}


# Each group: input series (one sample a minute), then which alerts fire at which time.
PROMTOOL_CASES: list[dict[str, Any]] = [
    {
        "input_series": [{"series": f"up{{{A}}}", "values": "1 1 0 0 0 0 0 0"}],
        "alert_rule_test": [
            {"eval_time": "3m", "alertname": "ConnectorDown", "exp_alerts": []},
            {
                "eval_time": "6m",
                "alertname": "ConnectorDown",
                "exp_alerts": [_alert(A, severity="critical")],
            },
        ],
    },
    {
        # No target at all.
        "input_series": [{"series": "other", "values": "1x10"}],
        "alert_rule_test": [
            {
                "eval_time": "5m",
                "alertname": "ConnectorDown",
                "exp_alerts": [_alert('job="cdc"', severity="critical")],
            }
        ],
    },
    {
        "input_series": [
            {"series": f"cdc_up{{{A}}}", "values": "1 0x10"},
            {"series": f"cdc_up{{{B}}}", "values": "1x10"},
        ],
        "alert_rule_test": [
            {"eval_time": "4m", "alertname": "ConnectorNotStreaming", "exp_alerts": []},
            {
                "eval_time": "7m",
                "alertname": "ConnectorNotStreaming",
                "exp_alerts": [_alert(A, severity="critical")],
            },
        ],
    },
    {
        "input_series": [
            {"series": f"cdc_replication_lag_seconds{{{A}}}", "values": "0 0 130x10"},
            {"series": f"cdc_replication_lag_seconds{{{B}}}", "values": "100x12"},
        ],
        "alert_rule_test": [
            {"eval_time": "5m", "alertname": "LagHigh", "exp_alerts": []},
            {
                "eval_time": "8m",
                "alertname": "LagHigh",
                "exp_alerts": [_alert(A, severity="warning")],
            },
        ],
    },
    {
        "input_series": [
            {"series": f'cdc_degraded{{{A}, component="sink"}}', "values": "0 1 1 1 1 1"},
            {"series": f'cdc_degraded{{{A}, component="source"}}', "values": "0x5"},
        ],
        "alert_rule_test": [
            {
                "eval_time": "4m",
                "alertname": "LinkDegraded",
                "exp_alerts": [_alert(A, 'component="sink"', severity="critical")],
            }
        ],
    },
    {
        # A: two letters at 21 min. B: a restart (back to 0) and then one letter.
        "input_series": [
            {"series": f"cdc_dead_letters{{{A}}}", "values": "0x20 2x30"},
            {"series": f"cdc_dead_letters{{{B}}}", "values": "3x20 0 1x30"},
            {"series": f"cdc_dead_letters{{{C}}}", "values": "5x50"},
        ],
        "alert_rule_test": [
            {"eval_time": "20m", "alertname": "DeadLettersGrowing", "exp_alerts": []},
            {
                "eval_time": "24m",
                "alertname": "DeadLettersGrowing",
                "exp_alerts": [_alert(A, severity="warning"), _alert(B, severity="warning")],
            },
            {"eval_time": "45m", "alertname": "DeadLettersGrowing", "exp_alerts": []},
        ],
    },
    {
        # A: an idle server (no transactions, no lag): no checkpoint to write, no alert.
        # B: transactions arrive but the checkpoint is not written. C: behind, nothing read.
        "input_series": [
            {"series": f"cdc_checkpoint_age_seconds{{{A}}}", "values": "0+60x30"},
            {"series": f"cdc_transactions_total{{{A}}}", "values": "7x30"},
            {"series": f"cdc_replication_lag_seconds{{{A}}}", "values": "0x30"},
            {"series": f"cdc_checkpoint_age_seconds{{{B}}}", "values": "0+60x30"},
            {"series": f"cdc_transactions_total{{{B}}}", "values": "0+10x30"},
            {"series": f"cdc_replication_lag_seconds{{{B}}}", "values": "0x30"},
            {"series": f"cdc_checkpoint_age_seconds{{{C}}}", "values": "0+60x30"},
            {"series": f"cdc_transactions_total{{{C}}}", "values": "7x30"},
            {"series": f"cdc_replication_lag_seconds{{{C}}}", "values": "600x30"},
        ],
        "alert_rule_test": [
            {"eval_time": "18m", "alertname": "CheckpointStale", "exp_alerts": []},
            {
                "eval_time": "25m",
                "alertname": "CheckpointStale",
                "exp_alerts": [_alert(B, severity="warning"), _alert(C, severity="warning")],
            },
        ],
    },
    {
        "input_series": [
            {
                "series": f'cdc_verify_mismatches{{{A}, index="c", kind="missing"}}',
                "values": "0 0 3x5",
            },
            {"series": f'cdc_verify_mismatches{{{A}, index="c", kind="extra"}}', "values": "0x7"},
        ],
        "alert_rule_test": [
            {
                "eval_time": "5m",
                "alertname": "VerifyMismatches",
                "exp_alerts": [_alert(A, 'index="c", kind="missing"', severity="warning")],
            }
        ],
    },
]


def test_promtool_accepts_the_config_and_the_queries_and_the_rules_fire_as_intended(
    tmp_path: Path,
) -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    checked = _promtool("check", "config", str(PROMETHEUS))  # checks the rule files too
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The dashboard's PromQL parses too, with its Grafana variables filled in (as recording
    # rules, the one way promtool checks an expression without a server).
    grafana = {"$__rate_interval": "1m", "$job": ".*", "$instance": ".*"}
    recorded = []
    for i, expr in enumerate(_dashboard_queries(_dashboard())):
        for variable, value in grafana.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        recorded.append({"record": f"dashboard:query_{i}", "expr": expr})
    (tmp_path / "dashboard.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]})
    )
    checked = _promtool("check", "rules", str(tmp_path / "dashboard.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # promtool's unit tests compare annotations exactly: test the expressions, `for` and
    # labels on a copy without them (`check` above has validated their templates).
    rules = _yaml(ALERTS)
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    cases = {
        "rule_files": ["alerts.yml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", **case} for case in PROMTOOL_CASES],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(cases, sort_keys=False))
    tested = _promtool("test", "rules", str(tmp_path / "tests.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr


# -- against a running connector -------------------------------------------------------------


def _sample_names(port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


def test_every_metric_the_dashboard_and_the_alerts_query_is_exported(
    mariadb: MariaDB, osmem: Osmem, fresh_db: str, redis_url: str, es_index: str, tmp_path: Path
) -> None:
    """Stricter than the text exposition's HELP/TYPE lines, which list a labelled family even
    before it has any child: every queried name must have samples (what a query returns). So
    the connector does everything the labelled metrics need: a snapshot (cdc_snapshot_rows),
    row changes (cdc_changes_total) and a background verification pass (cdc_verify_mismatches,
    the first one `verify.interval` = 10 s after the start)."""
    referenced = _referenced()
    wanted = {name for name in referenced if name not in PROMETHEUS_SERIES}
    assert len(wanted) >= 15, sorted(wanted)
    assert all(name.startswith("cdc_") for name in wanted), sorted(wanted)

    db = fresh_db
    mariadb.sql("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40))", db=db)
    mariadb.sql("INSERT INTO items VALUES " + ", ".join(f"({i}, 'n{i}')" for i in range(20)), db=db)
    port = free_port()
    config = write_config(
        tmp_path / "c.yaml",
        port=mariadb.port,
        es_url=osmem.url,
        redis_url=redis_url,
        tables=[{"table": f"{db}.items", "index": es_index}],
        name=db,
        snapshot={"mode": "initial"},
        metrics={"host": "127.0.0.1", "port": port},
        verify={"interval": 10, "max_rows_per_second": 0},
    )
    with CdcProcess(config) as connector:
        wait_for(lambda: osmem.count(es_index) == 20, 60, "the initial snapshot")
        mariadb.sql("INSERT INTO items VALUES (100, 'x'), (101, 'y')", db=db)
        mariadb.sql("UPDATE items SET name = 'z' WHERE id < 5", db=db)
        mariadb.sql("DELETE FROM items WHERE id = 19", db=db)
        wait_for(lambda: osmem.count(es_index) == 21, 30, "the row changes")
        deadline = time.monotonic() + 60
        missing = wanted - _sample_names(port)
        while missing and time.monotonic() < deadline:
            time.sleep(0.5)
            missing = wanted - _sample_names(port)
        connector.terminate()
        assert connector.wait() == 0, connector.log()

    assert not missing, "queried but not exported by a running connector: " + ", ".join(
        f"{name} ({', '.join(sorted(referenced[name]))})" for name in sorted(missing)
    )
