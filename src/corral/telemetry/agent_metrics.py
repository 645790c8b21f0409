"""The agent runtime's metrics, in the gateway's metrics registry:

- ``corral_agent_runs_total{agent,status}``, ``corral_agent_run_duration_seconds{agent}``
  (`run_finished`) and ``corral_tool_calls_total{agent,tool,outcome}`` (`tool_returned`):
  together the agent service's `RunObserver`;
- ``corral_agent_tokens_total{agent,kind}`` and ``corral_agent_cost_usd_total{agent}``
  (`model_call`): called where a run's model call is metered, with the agent that made
  it (``CallContext.agent``, set by the runner per call).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

TOKEN_KINDS = ("input", "output", "cached_input", "reasoning")


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter("corral_agent_runs", "Agent runs by agent and outcome (completed, failed, cancelled, "
                            "input-required, requeued).", ["agent", "status"], registry=registry)
        self.duration = Histogram("corral_agent_run_duration_seconds", "Time an agent run spent executing.",
                                  ["agent"], registry=registry,
                                  buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
        self.tools = Counter("corral_tool_calls", "Tool calls by agent, tool and outcome (ok, error).",
                             ["agent", "tool", "outcome"], registry=registry)
        self.tokens = Counter("corral_agent_tokens", "Tokens of agent runs' model calls by agent and kind "
                              "(input, output, cached_input, reasoning).", ["agent", "kind"], registry=registry)
        self.cost = Counter("corral_agent_cost_usd", "Spend of agent runs' model calls in US dollars, by agent.",
                            ["agent"], registry=registry)

    def tool_returned(self, agent: str, tool: str, is_error: bool) -> None:
        self.tools.labels(agent=agent, tool=tool, outcome="error" if is_error else "ok").inc()

    def run_finished(self, agent: str, status: str, seconds: float) -> None:
        self.runs.labels(agent=agent, status=status).inc()
        self.duration.labels(agent=agent).observe(seconds)

    def model_call(self, agent: str, *, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0,
                   reasoning_tokens: int = 0, cost_usd: float = 0.0) -> None:
        """One model call an agent run made (tokens as the upstream reported them)."""
        for kind, count in zip(TOKEN_KINDS, (input_tokens, output_tokens, cached_input_tokens, reasoning_tokens),
                               strict=True):
            if count:
                self.tokens.labels(agent=agent, kind=kind).inc(count)
        if cost_usd:
            self.cost.labels(agent=agent).inc(cost_usd)
