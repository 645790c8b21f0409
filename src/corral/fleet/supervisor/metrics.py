"""Prometheus metrics, built per supervisor (no process-global registry).

Most values live in the components as plain counters and are published at scrape; the
command duration histogram is observed by the dispatcher as commands finish.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest

from corral.fleet.supervisor.events import MAX_EVENT_TYPES

if TYPE_CHECKING:
    from corral.fleet.supervisor.app import Supervisor


COMMAND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def command_histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram("corral_fleet_command_duration_seconds",
                     "From dispatch to the node's result (or the timeout), by command type and status",
                     ["type", "status"], buckets=COMMAND_BUCKETS, registry=registry)


class FleetMetrics:
    def __init__(self, sup: Supervisor, registry: CollectorRegistry) -> None:
        self.sup = sup
        self.registry = registry
        r = self.registry
        self.nodes = Gauge("corral_fleet_nodes", "Nodes by status", ["status"], registry=r)
        self.sessions = Gauge("corral_fleet_sessions", "Sessions by state", ["state"], registry=r)
        self.connections = Gauge("corral_fleet_connections_active", "Open node connections", registry=r)
        self.events = Gauge("corral_fleet_events_stored_total", "Events stored since start", registry=r)
        self.events_by_type = Gauge("corral_fleet_events_total", "Events stored since start, by event type "
                                    f"(beyond {MAX_EVENT_TYPES} types: 'other')", ["type"], registry=r)
        self.dups = Gauge("corral_fleet_events_duplicate_total", "Duplicate events dropped since start", registry=r)
        self.backlog = Gauge("corral_fleet_event_backlog", "Events waiting to be stored", registry=r)
        self.rejected = Gauge("corral_fleet_rejected_total", "Rejected handshakes and frames", ["reason"], registry=r)
        self.commands = Gauge("corral_fleet_commands_total", "Commands by type and status", ["type", "status"],
                              registry=r)
        self.policy = Gauge("corral_fleet_policy_actions_total", "Policy actions", ["policy", "result"], registry=r)
        self.alerts = Gauge("corral_fleet_alerts_total", "Alerts by route and outcome", ["route", "outcome"],
                            registry=r)
        self.audit_purged = Gauge("corral_fleet_audit_purged_total", "Audit entries purged", registry=r)
        self.events_purged = Gauge("corral_fleet_events_purged_total", "Stored events purged by retention",
                                   registry=r)
        self.chat_refused = Gauge("corral_fleet_chatops_refused_total",
                                  "Chat-ops requests refused (signature, timestamp, allowlist)",
                                  ["platform", "reason"], registry=r)
        self.reloads = Gauge("corral_fleet_config_reloads_total", "Config reloads by result", ["result"], registry=r)
        self.config_info = Gauge("corral_fleet_config_info", "The running config file's hash (first 16 hex of SHA-256)",
                                 ["hash"], registry=r)
        self.reload_failing = Gauge("corral_fleet_config_reload_failing",
                                    "1 while the last reload was rejected (the previous config still serves)",
                                    registry=r)
        self.evicted = Gauge("corral_fleet_sessions_evicted_total",
                             "Finished sessions evicted from memory (still in the store)", registry=r)

    def render(self) -> bytes:
        sup = self.sup
        for status in ("online", "offline"):
            self.nodes.labels(status).set(sum(1 for n in sup.state.nodes.values() if n.status == status))
        for state in ("running", "idle", "compacted", "error", "completed", "unreachable"):
            self.sessions.labels(state).set(sum(1 for s in sup.state.sessions.values() if s.state == state))
        self.connections.set(len(sup.hub.connections))
        self.events.set(sup.pipeline.stored_total)
        self.dups.set(sup.pipeline.duplicates_total)
        self.backlog.set(sup.pipeline.backlog)
        for reason, count in sup.hub.rejected.items():
            self.rejected.labels(reason).set(count)
        for (kind, status), count in sup.dispatcher.counts.items():
            self.commands.labels(kind, status).set(count)
        for (name, result), count in sup.policies.actions.items():
            self.policy.labels(name, result).set(count)
        for route, stats in sup.alerter.stats().items():
            for outcome, count in stats.items():
                self.alerts.labels(route, outcome).set(count)
        self.audit_purged.set(sup.retention.audit_purged_total)
        self.events_purged.set(sup.retention.events_purged_total)
        for kind, count in sup.pipeline.stored_by_type.items():
            self.events_by_type.labels(kind).set(count)
        self.evicted.set(sup.state.evicted_total)
        for result in ("success", "failure"):
            self.reloads.labels(result).set(sup.reloads[result])
        self.config_info.clear()
        self.config_info.labels(sup.config_hash).set(1)
        self.reload_failing.set(1 if sup.reload_error else 0)
        for (platform, reason), count in sup.chatops.refused.items():
            self.chat_refused.labels(platform, reason).set(count)
        return generate_latest(self.registry)
