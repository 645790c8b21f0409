"""`corral generate prometheus`: a scrape config for the gateway and the fleet supervisor,
and alert rules on the metrics they export (docs/observability.md lists them).

The gateway's ``/metrics`` takes the scrape token (``observability.metrics_token``, also
``CORRAL_METRICS_TOKEN``) as a bearer token; the config points Prometheus at a file
holding it (``credentials_file``), so the token is never written into the config.
The supervisor's ``/metrics`` is open (its HTTP API is not).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RULES_FILE = "corral-rules.yml"
TOKEN_FILE = "/etc/prometheus/corral-metrics-token"


@dataclass(slots=True)
class Thresholds:
    error_ratio: float = 0.05  # failed calls / calls, per model, over 5 minutes
    p95_latency_seconds: float = 30.0  # whole request (a stream: to its last chunk)
    p99_overhead_seconds: float = 0.05  # Corral's own time per request
    tokens_per_minute: float = 1_000_000  # all models together
    daily_budget_usd: float = 100.0  # spend rate that would exceed this in a day
    queue_depth: int = 1000  # records waiting in a batch writer (usage) or the fleet's event queue
    agent_failure_ratio: float = 0.2


@dataclass(slots=True)
class ScrapeTargets:
    gateways: list[str] = field(default_factory=lambda: ["localhost:8080"])
    supervisors: list[str] = field(default_factory=list)  # host:http_port
    token_file: str | None = TOKEN_FILE  # None: the gateway's /metrics is public (or auth is off)
    kubernetes_namespace: str | None = None  # discover gateway pods by their prometheus.io annotations
    interval: str = "15s"


def scrape_config(targets: ScrapeTargets) -> dict[str, Any]:
    gateway: dict[str, Any] = {"job_name": "corral", "metrics_path": "/metrics"}
    if targets.token_file:
        gateway["authorization"] = {"type": "Bearer", "credentials_file": targets.token_file}
    if targets.kubernetes_namespace:
        gateway["kubernetes_sd_configs"] = [{"role": "pod", "namespaces": {"names": [targets.kubernetes_namespace]}}]
        annotation = "__meta_kubernetes_pod_annotation_prometheus_io_"
        gateway["relabel_configs"] = [
            {"source_labels": [f"{annotation}scrape"], "action": "keep", "regex": "true"},
            {"source_labels": [f"{annotation}path"], "action": "replace", "target_label": "__metrics_path__",
             "regex": "(.+)"},
            {"source_labels": ["__address__", f"{annotation}port"], "action": "replace",
             "regex": "([^:]+)(?::\\d+)?;(\\d+)", "replacement": "$1:$2", "target_label": "__address__"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ]
    else:
        gateway["static_configs"] = [{"targets": list(targets.gateways)}]
    jobs = [gateway]
    if targets.supervisors:
        jobs.append({"job_name": "corral-supervisor", "metrics_path": "/metrics",
                     "static_configs": [{"targets": list(targets.supervisors)}]})
    return {
        "global": {"scrape_interval": targets.interval, "evaluation_interval": targets.interval},
        "rule_files": [RULES_FILE],
        "scrape_configs": jobs,
    }


def _alert(name: str, expr: str, duration: str, severity: str, summary: str, description: str) -> dict[str, Any]:
    return {"alert": name, "expr": expr, "for": duration, "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": description}}


def alert_rules(t: Thresholds) -> dict[str, Any]:
    gateway = [
        _alert("CorralHighErrorRate",
               "sum by (model) (rate(corral_errors_total[5m])) / sum by (model) (rate(corral_requests_total[5m])) "
               f"> {t.error_ratio:g}",
               "10m", "warning", "Model {{ $labels.model }} fails over " + f"{t.error_ratio:.0%} of calls",
               "{{ $value | humanizePercentage }} of the calls to {{ $labels.model }} failed in the last 5 minutes."),
        _alert("CorralHighLatency",
               "histogram_quantile(0.95, sum by (le, model) (rate(corral_request_duration_seconds_bucket[5m]))) "
               f"> {t.p95_latency_seconds:g}",
               "10m", "warning", "Slow calls to {{ $labels.model }}",
               "95th percentile request time of {{ $labels.model }} is {{ $value | humanizeDuration }}."),
        _alert("CorralHighOverhead",
               "histogram_quantile(0.99, sum by (le) (rate(corral_overhead_seconds_bucket[5m]))) "
               f"> {t.p99_overhead_seconds:g}",
               "15m", "warning", "Corral itself is slow to answer",
               "99th percentile of Corral's own time per request is {{ $value | humanizeDuration }}."),
        _alert("CorralHighTokenUsage",
               f"sum(rate(corral_tokens_total[10m])) * 60 > {t.tokens_per_minute:g}",
               "10m", "warning", "Token usage is high",
               "{{ $value | humanize }} tokens a minute over the last 10 minutes."),
        _alert("CorralBudgetBurn",
               f"sum(rate(corral_cost_usd_total[1h])) * 86400 > {t.daily_budget_usd:g}",
               "15m", "warning", "Spend is on course to pass the daily budget",
               "At the last hour's rate, a day costs {{ $value | humanize }} USD (budget "
               f"{t.daily_budget_usd:g} USD)."),
        _alert("CorralBudgetExhausted",
               'sum by (scope) (increase(corral_limit_rejections_total{limit="budget"}[15m])) > 0',
               "0m", "warning", "Requests refused: a {{ $labels.scope }} budget is spent",
               "{{ $value | humanize }} requests were refused by a budget in the last 15 minutes."),
        _alert("CorralDeploymentDown", "corral_deployment_healthy == 0", "5m", "critical",
               "Deployment {{ $labels.deployment }} of {{ $labels.alias }} is out of service",
               "The router has kept {{ $labels.deployment }} in cooldown for 5 minutes: it keeps failing."),
        _alert("CorralBatchQueueBacklog", f"corral_batch_queue_depth > {t.queue_depth}", "5m", "warning",
               "The {{ $labels.writer }} batch writer is falling behind",
               "{{ $value }} records wait to be written; the database may be slow or unreachable."),
        _alert("CorralAgentRunsFailing",
               'sum by (agent) (rate(corral_agent_runs_total{status="failed"}[15m])) '
               f"/ sum by (agent) (rate(corral_agent_runs_total[15m])) > {t.agent_failure_ratio:g}",
               "15m", "warning", "Runs of agent {{ $labels.agent }} keep failing",
               "{{ $value | humanizePercentage }} of its runs failed in the last 15 minutes."),
        _alert("CorralGatewayDown", 'up{job="corral"} == 0', "2m", "critical", "A Corral gateway is down",
               "Prometheus cannot scrape {{ $labels.instance }}."),
    ]
    fleet = [
        _alert("CorralFleetNodeOffline", 'corral_fleet_nodes{status="offline"} > 0', "5m", "warning",
               "{{ $value }} fleet node(s) offline",
               "Nodes stopped sending heartbeats to the supervisor {{ $labels.instance }}."),
        _alert("CorralFleetEventBacklog", f"corral_fleet_event_backlog > {t.queue_depth}", "5m", "warning",
               "The supervisor is falling behind storing events",
               "{{ $value }} fleet events wait to be stored at {{ $labels.instance }}."),
        _alert("CorralSupervisorDown", 'up{job="corral-supervisor"} == 0', "2m", "critical",
               "The fleet supervisor is down", "Prometheus cannot scrape {{ $labels.instance }}."),
    ]
    return {"groups": [{"name": "corral-gateway", "rules": gateway}, {"name": "corral-fleet", "rules": fleet}]}
