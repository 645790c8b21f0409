"""`corral generate prometheus` and `corral generate grafana`: promtool accepts the files,
a real Prometheus scrapes a running gateway (with its credential) and supervisor, and
every metric the rules and dashboards name is one Corral exports (live /metrics)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from corral.cli.main import build_app
from corral.deploy import grafana, prometheus
from corral.fleet.testing import FleetProcess, start_supervisor
from corral.testing.process import ServeProcess, start_serve
from corral.testing.server import free_port

MASTER = "sk-corral-master-0123456789"
SCRAPE_TOKEN = "scrape-token-0123456789"
FLEET_TOKEN = "fleet-token-0123456789abcdef"
GATEWAY_YAML = f"""\
version: 1
auth: {{master_key: {MASTER}}}
providers:
  script: {{type: scripted}}
models:
  scripted: {{provider: script, model: scripted}}
agents:
  helper: {{model: scripted}}
observability:
  metrics_token: {SCRAPE_TOKEN}
"""


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian's prometheus package)"
        if os.environ.get("CORRAL_REQUIRE_SERVICES") == "1":
            pytest.fail(f"CORRAL_REQUIRE_SERVICES=1 but {message}")
        pytest.skip(message)
    return path


def generate(*args: str) -> None:
    result = CliRunner().invoke(build_app(), ["generate", *args])
    assert result.exit_code == 0, result.output


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], capture_output=True, text=True, timeout=60)


# ---- the files --------------------------------------------------------------


def test_promtool_accepts_the_scrape_config_and_the_rules(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(SCRAPE_TOKEN)
    generate("prometheus", "--gateway", "gw1:8080", "--gateway", "gw2:8080", "--supervisor", "sup:8421",
             "--token-file", str(token), "--daily-budget", "250", "--out", str(tmp_path / "prom"))
    checked = promtool("check", "config", str(tmp_path / "prom" / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 13 rules found" in checked.stdout  # the rule file, checked through the config
    rules = promtool("check", "rules", str(tmp_path / "prom" / prometheus.RULES_FILE))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = yaml.safe_load((tmp_path / "prom" / "prometheus.yml").read_text())
    gateway, supervisor = config["scrape_configs"]
    assert gateway["authorization"] == {"type": "Bearer", "credentials_file": str(token)}
    assert gateway["static_configs"] == [{"targets": ["gw1:8080", "gw2:8080"]}]
    assert supervisor["static_configs"] == [{"targets": ["sup:8421"]}] and "authorization" not in supervisor
    alerts = {r["alert"]: r for g in yaml.safe_load(
        (tmp_path / "prom" / prometheus.RULES_FILE).read_text())["groups"] for r in g["rules"]}
    assert {"CorralHighErrorRate", "CorralHighLatency", "CorralHighTokenUsage", "CorralBudgetBurn",
            "CorralDeploymentDown", "CorralFleetNodeOffline", "CorralBatchQueueBacklog"} <= set(alerts)
    assert alerts["CorralBudgetBurn"]["expr"].endswith("* 86400 > 250")


RULE_TESTS = """\
rule_files: [RULES]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'corral_deployment_healthy{alias="main",deployment="openai/gpt-4o"}'
        values: '1 1 0 0 0 0 0 0 0 0'
      - series: 'corral_fleet_nodes{status="offline",instance="sup:8421",job="corral-supervisor"}'
        values: '0 1 1 1 1 1 1 1 1 1'
      - series: 'corral_requests_total{surface="openai",model="m",status="200"}'
        values: '0+60x30'
      - series: 'corral_errors_total{surface="openai",model="m",type="rate_limit_exceeded"}'
        values: '0+12x30'
    alert_rule_test:
      - eval_time: 8m
        alertname: CorralDeploymentDown
        exp_alerts:
          - exp_labels: {severity: critical, alias: main, deployment: openai/gpt-4o}
            exp_annotations:
              summary: Deployment openai/gpt-4o of main is out of service
              description: "The router has kept openai/gpt-4o in cooldown for 5 minutes: it keeps failing."
      - eval_time: 3m
        alertname: CorralDeploymentDown
        exp_alerts: []
      - eval_time: 8m
        alertname: CorralFleetNodeOffline
        exp_alerts:
          - exp_labels: {severity: warning, instance: "sup:8421", job: corral-supervisor, status: offline}
            exp_annotations:
              summary: 1 fleet node(s) offline
              description: Nodes stopped sending heartbeats to the supervisor sup:8421.
      - eval_time: 20m
        alertname: CorralHighErrorRate
        exp_alerts:
          - exp_labels: {severity: warning, model: m}
            exp_annotations:
              summary: Model m fails over 5% of calls
              description: 20% of the calls to m failed in the last 5 minutes.
"""


def test_alert_rules_fire_on_the_series_they_watch(tmp_path: Path) -> None:
    generate("prometheus", "--no-token", "--out", str(tmp_path))
    cases = tmp_path / "tests.yml"
    cases.write_text(RULE_TESTS.replace("RULES", prometheus.RULES_FILE))
    result = promtool("test", "rules", str(cases))
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_scrape_finds_the_annotated_pods_and_sends_the_token() -> None:
    # (Debian's promtool is built without Kubernetes discovery, so this one is checked by shape.)
    config = prometheus.scrape_config(prometheus.ScrapeTargets(kubernetes_namespace="corral"))
    [job] = config["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["corral"]}}]
    keep, path, address, _ = job["relabel_configs"]
    assert keep == {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"], "action": "keep",
                    "regex": "true"}
    assert path["target_label"] == "__metrics_path__"
    assert re.fullmatch(address["regex"], "10.0.0.7:9191;9191") and address["replacement"] == "$1:$2"
    assert job["authorization"]["credentials_file"] == prometheus.TOKEN_FILE


# ---- against a running gateway and supervisor ---------------------------------------


@dataclass
class Running:
    gateway: ServeProcess
    supervisor_url: str
    gateway_target: str
    supervisor_target: str


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("observed")
    config = root / "corral.yaml"
    config.write_text(GATEWAY_YAML)
    # A cold `corral serve` imports for a while on a loaded machine: bounded, but not tight.
    gateway = start_serve(config, env={"CORRAL_DATA_DIR": str(root / "data")}, ready_timeout=60)
    sup_config = root / "supervisor.yaml"
    sup_config.write_text(f"version: 1\ndatabase_url: sqlite:///{root / 'fleet.db'}\n")
    ws, http = free_port(), free_port()
    supervisor: FleetProcess | None = None
    try:
        supervisor = start_supervisor(sup_config, port=ws, http_port=http, token=FLEET_TOKEN, ready_timeout=60)
        headers = {"authorization": f"Bearer {MASTER}"}
        reply = httpx.post(f"{gateway.base_url}/v1/chat/completions", headers=headers, timeout=10,
                           json={"model": "scripted", "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 200, reply.text
        yield Running(gateway, f"http://127.0.0.1:{http}", gateway.base_url.removeprefix("http://"),
                      f"127.0.0.1:{http}")
    finally:
        if supervisor is not None:
            supervisor.stop()
        gateway.proc.terminate()
        gateway.proc.wait(15)


def exported(text: str) -> set[str]:
    """The series names a /metrics text can hold (a counter's ``_total``, a histogram's
    ``_bucket``...), whether or not a series has been observed yet."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def named_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\bcorral_[a-z0-9_]+", expr))


def selectors(expr: str) -> set[str]:
    """Every name used as a series selector (followed by ``{`` or ``[``)."""
    return set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]", expr))


def dashboard_exprs(board: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_dashboards_and_rules_name_only_metrics_corral_exports(running: Running) -> None:
    live = httpx.get(f"{running.gateway.base_url}/metrics", headers={"authorization": f"Bearer {MASTER}"}, timeout=10)
    fleet = httpx.get(f"{running.supervisor_url}/metrics", timeout=10)
    assert live.status_code == 200 and fleet.status_code == 200
    available = exported(live.text) | exported(fleet.text)
    boards = grafana.dashboards()
    assert set(boards) == {"corral-gateway.json", "corral-agents.json", "corral-fleet.json"}
    used: set[str] = set()
    for name, board in boards.items():
        exprs = dashboard_exprs(board)
        assert len(exprs) >= 9, name
        for expr in exprs:
            assert named_metrics(expr), (name, expr)
            assert selectors(expr) <= named_metrics(expr), (name, expr)  # no selector outside Corral's
            used |= named_metrics(expr)
    rules = prometheus.alert_rules(prometheus.Thresholds())
    for group in rules["groups"]:
        for rule in group["rules"]:
            used |= named_metrics(rule["expr"])
    assert used - available == set()
    assert {"corral_requests_total", "corral_agent_tokens_total", "corral_fleet_nodes"} <= used


def test_grafana_command_writes_importable_dashboards(tmp_path: Path) -> None:
    generate("grafana", "--out", str(tmp_path))
    for name, board in grafana.dashboards().items():
        written = json.loads((tmp_path / name).read_text())
        assert written == board
        assert written["templating"]["list"][0] == {"name": "datasource", "label": "Data source",
                                                    "type": "datasource", "query": "prometheus", "current": {},
                                                    "hide": 0}
        ids = [p["id"] for p in written["panels"]]
        assert len(ids) == len(set(ids))
        assert all(p["datasource"] == {"type": "prometheus", "uid": "${datasource}"} for p in written["panels"])


def test_prometheus_scrapes_the_gateway_with_its_credential_and_the_supervisor(
    running: Running, tmp_path: Path
) -> None:
    binary = tool("prometheus")
    token = tmp_path / "token"
    # The gateway accepts an admin key on /metrics; the scrape token (observability.metrics_token)
    # is accepted too once the route asks `ScrapeAccess`.
    token.write_text(MASTER)
    generate("prometheus", "--gateway", running.gateway_target, "--supervisor", running.supervisor_target,
             "--token-file", str(token), "--scrape-interval", "1s", "--out", str(tmp_path))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        found = _query_until(port, {"gateway": 'corral_requests_total{job="corral",model="scripted",status="200"}',
                                    "nodes": 'corral_fleet_nodes{job="corral-supervisor",status="online"}',
                                    "up": 'up{job="corral"}'}, proc, within=20)
    finally:
        proc.terminate()
        proc.wait(15)
    assert float(found["gateway"][0]["value"][1]) >= 1
    assert found["gateway"][0]["metric"]["surface"] == "openai"
    assert float(found["nodes"][0]["value"][1]) == 0
    assert found["up"][0]["value"][1] == "1"  # the scrape with the credential succeeded


def _query_until(port: int, queries: dict[str, str], proc: subprocess.Popen[bytes],
                 within: float) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and len(found) < len(queries):
        assert proc.poll() is None, "prometheus exited"
        for name, query in queries.items():
            if name in found:
                continue
            try:
                reply = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}, timeout=2)
            except httpx.HTTPError:
                break
            result = reply.json()["data"]["result"] if reply.status_code == 200 else []
            if result:
                found[name] = result
        time.sleep(0.25)
    assert len(found) == len(queries), f"not scraped within {within}s: {set(queries) - set(found)}"
    return found
