"""``corral_agent_runs``, ``corral_agent_run_duration_seconds`` and ``corral_tool_calls``:
the agent service's `RunObserver`, in the gateway's metrics registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter("corral_agent_runs", "Agent runs by agent and outcome (completed, failed, cancelled, "
                            "input-required, requeued).", ["agent", "status"], registry=registry)
        self.duration = Histogram("corral_agent_run_duration_seconds", "Time an agent run spent executing.",
                                  ["agent"], registry=registry,
                                  buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
        self.tools = Counter("corral_tool_calls", "Tool calls by agent, tool and outcome (ok, error).",
                             ["agent", "tool", "outcome"], registry=registry)

    def tool_returned(self, agent: str, tool: str, is_error: bool) -> None:
        self.tools.labels(agent=agent, tool=tool, outcome="error" if is_error else "ok").inc()

    def run_finished(self, agent: str, status: str, seconds: float) -> None:
        self.runs.labels(agent=agent, status=status).inc()
        self.duration.labels(agent=agent).observe(seconds)
