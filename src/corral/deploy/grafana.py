"""`corral generate grafana`: dashboards (Grafana JSON model) for the gateway, the agents
and the fleet, on the metrics Corral exports (docs/observability.md lists them).

Each dashboard takes its Prometheus data source from a ``datasource`` variable, so it
imports as is into any Grafana (UI import, or file provisioning).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    exprs: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    description: str = ""


def _panel(panel: Panel, index: int, y: int) -> dict[str, Any]:
    width = 6 if panel.kind == "stat" else 12
    return {
        "id": index + 1,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 5 if panel.kind == "stat" else 8, "w": width, "x": 0, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if panel.kind == "timeseries" else
        {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
        "targets": [{"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i)}
                    for i, (expr, legend) in enumerate(panel.exprs)],
    }


def _layout(panels: list[Panel]) -> list[dict[str, Any]]:
    """Stats four to a row, graphs two to a row."""
    out: list[dict[str, Any]] = []
    x = y = row_height = 0
    for index, panel in enumerate(panels):
        rendered = _panel(panel, index, y)
        width, height = rendered["gridPos"]["w"], rendered["gridPos"]["h"]
        if x + width > 24:
            x, y = 0, y + row_height
            row_height = 0
        rendered["gridPos"].update(x=x, y=y)
        x += width
        row_height = max(row_height, height)
        out.append(rendered)
    return out


def dashboard(uid: str, title: str, panels: list[Panel],
              variables: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    templating = [{"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
                   "current": {}, "hide": 0}]
    return {
        "uid": uid,
        "title": title,
        "tags": ["corral"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": templating + (variables or [])},
        "panels": _layout(panels),
    }


def _query_variable(name: str, label: str, metric: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DATASOURCE,
            "query": {"query": f"label_values({metric}, {name})", "refId": "Var"},
            "definition": f"label_values({metric}, {name})", "includeAll": True, "multi": True,
            "allValue": ".*", "current": {}, "refresh": 2, "hide": 0}


def gateway_dashboard() -> dict[str, Any]:
    m = 'model=~"$model"'
    panels = [
        Panel("Requests / s", ((f"sum(rate(corral_requests_total{{{m}}}[5m]))", "requests"),), "reqps", "stat"),
        Panel("Error ratio", ((f"sum(rate(corral_errors_total{{{m}}}[5m])) / "
                               f"sum(rate(corral_requests_total{{{m}}}[5m]))", "errors"),), "percentunit", "stat"),
        Panel("Spend today", ((f"sum(increase(corral_cost_usd_total{{{m}}}[1d]))", "USD"),), "currencyUSD", "stat"),
        Panel("Deployments out of service", (("count(corral_deployment_healthy == 0) or vector(0)", "cooling"),),
              "short", "stat"),
        Panel("Requests by model and status", ((f"sum by (model, status) (rate(corral_requests_total{{{m}}}[5m]))",
                                                "{{model}} {{status}}"),), "reqps"),
        Panel("Errors by type", ((f"sum by (model, type) (rate(corral_errors_total{{{m}}}[5m]))",
                                  "{{model}} {{type}}"),), "reqps"),
        Panel("Request time (p50, p95)", (
            (f"histogram_quantile(0.5, sum by (le, model) (rate(corral_request_duration_seconds_bucket{{{m}}}[5m])))",
             "p50 {{model}}"),
            (f"histogram_quantile(0.95, sum by (le, model) (rate(corral_request_duration_seconds_bucket{{{m}}}[5m])))",
             "p95 {{model}}")), "s"),
        Panel("Time to first token (p95)", (
            (f"histogram_quantile(0.95, sum by (le, model) "
             f"(rate(corral_time_to_first_token_seconds_bucket{{{m}}}[5m])))", "{{model}}"),), "s"),
        Panel("Corral overhead (p50, p99)", (
            ("histogram_quantile(0.5, sum by (le) (rate(corral_overhead_seconds_bucket[5m])))", "p50"),
            ("histogram_quantile(0.99, sum by (le) (rate(corral_overhead_seconds_bucket[5m])))", "p99")), "s",
              description="Corral's own time per request before the response starts (x-corral-overhead-ms)."),
        Panel("Tokens / min by model and kind", ((f"sum by (model, kind) (rate(corral_tokens_total{{{m}}}[5m])) * 60",
                                                  "{{model}} {{kind}}"),)),
        Panel("Spend / hour by model", ((f"sum by (model) (rate(corral_cost_usd_total{{{m}}}[1h])) * 3600",
                                         "{{model}}"),), "currencyUSD"),
        Panel("Limit and budget rejections", (("sum by (limit, scope) (rate(corral_limit_rejections_total[5m]))",
                                               "{{scope}} {{limit}}"),), "reqps"),
        Panel("Deployment health", (("corral_deployment_healthy", "{{alias}} {{deployment}}"),)),
        Panel("Batch writer queue", (("sum by (writer) (corral_batch_queue_depth)", "{{writer}}"),)),
    ]
    return dashboard("corral-gateway", "Corral / Gateway", panels,
                     [_query_variable("model", "Model", "corral_requests_total")])


def agents_dashboard() -> dict[str, Any]:
    a = 'agent=~"$agent"'
    panels = [
        Panel("Runs / min", ((f"sum(rate(corral_agent_runs_total{{{a}}}[5m])) * 60", "runs"),), "short", "stat"),
        Panel("Failed runs", ((f'sum(rate(corral_agent_runs_total{{{a},status="failed"}}[15m])) / '
                               f"sum(rate(corral_agent_runs_total{{{a}}}[15m]))", "failed"),), "percentunit", "stat"),
        Panel("Agent spend today", ((f"sum(increase(corral_agent_cost_usd_total{{{a}}}[1d]))", "USD"),),
              "currencyUSD", "stat"),
        Panel("Tool error ratio", ((f'sum(rate(corral_tool_calls_total{{{a},outcome="error"}}[15m])) / '
                                    f"sum(rate(corral_tool_calls_total{{{a}}}[15m]))", "errors"),), "percentunit",
              "stat"),
        Panel("Runs by agent and outcome", ((f"sum by (agent, status) (rate(corral_agent_runs_total{{{a}}}[5m])) * 60",
                                             "{{agent}} {{status}}"),)),
        Panel("Run time (p50, p95)", (
            (f"histogram_quantile(0.5, sum by (le, agent) "
             f"(rate(corral_agent_run_duration_seconds_bucket{{{a}}}[15m])))", "p50 {{agent}}"),
            (f"histogram_quantile(0.95, sum by (le, agent) "
             f"(rate(corral_agent_run_duration_seconds_bucket{{{a}}}[15m])))", "p95 {{agent}}")), "s"),
        Panel("Tokens / min by agent", ((f"sum by (agent, kind) (rate(corral_agent_tokens_total{{{a}}}[5m])) * 60",
                                         "{{agent}} {{kind}}"),)),
        Panel("Spend / hour by agent", ((f"sum by (agent) (rate(corral_agent_cost_usd_total{{{a}}}[1h])) * 3600",
                                         "{{agent}}"),), "currencyUSD"),
        Panel("Tool calls by tool and outcome", ((f"sum by (tool, outcome) (rate(corral_tool_calls_total{{{a}}}[5m]))"
                                                  " * 60", "{{tool}} {{outcome}}"),)),
    ]
    return dashboard("corral-agents", "Corral / Agents", panels,
                     [_query_variable("agent", "Agent", "corral_agent_runs_total")])


def fleet_dashboard() -> dict[str, Any]:
    panels = [
        Panel("Nodes online", (('sum(corral_fleet_nodes{status="online"})', "online"),), "short", "stat"),
        Panel("Nodes offline", (('sum(corral_fleet_nodes{status="offline"})', "offline"),), "short", "stat"),
        Panel("Node connections", (("sum(corral_fleet_connections_active)", "connections"),), "short", "stat"),
        Panel("Event backlog", (("sum(corral_fleet_event_backlog)", "waiting"),), "short", "stat"),
        Panel("Nodes by status", (("sum by (status) (corral_fleet_nodes)", "{{status}}"),)),
        Panel("Sessions by state", (("sum by (state) (corral_fleet_sessions)", "{{state}}"),)),
        Panel("Events stored / s", (("sum(rate(corral_fleet_events_stored_total[5m]))", "stored"),
                                    ("sum(rate(corral_fleet_events_duplicate_total[5m]))", "duplicates dropped")),
              "ops"),
        Panel("Commands by type and status", (("sum by (type, status) (rate(corral_fleet_commands_total[5m])) * 60",
                                               "{{type}} {{status}}"),)),
        Panel("Policy actions", (("sum by (policy, result) (rate(corral_fleet_policy_actions_total[15m])) * 60",
                                  "{{policy}} {{result}}"),)),
        Panel("Alerts sent", (("sum by (route, outcome) (rate(corral_fleet_alerts_total[15m])) * 60",
                               "{{route}} {{outcome}}"),)),
        Panel("Rejected handshakes and frames", (("sum by (reason) (rate(corral_fleet_rejected_total[5m]))",
                                                  "{{reason}}"),), "ops"),
    ]
    return dashboard("corral-fleet", "Corral / Fleet", panels)


def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard."""
    return {"corral-gateway.json": gateway_dashboard(), "corral-agents.json": agents_dashboard(),
            "corral-fleet.json": fleet_dashboard()}
