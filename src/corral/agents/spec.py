"""An agent as the runner sees it, and the resumable state of one run."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from corral.agents.messages import messages_from_json, messages_to_json
from corral.config.agents import AgentConfig
from corral.llm.types import Message, Usage
from corral.tools.base import Toolset

_TEMPLATE = re.compile(r"\{session\.([A-Za-z_][A-Za-z0-9_]*)(\?)?\}")


@dataclass
class Agent:
    name: str
    config: AgentConfig
    instructions: str = ""
    toolsets: list[Toolset] = field(default_factory=list)

    @property
    def model(self) -> str:
        return self.config.model or ""

    @property
    def is_remote(self) -> bool:
        return self.config.type == "remote"

    def system_prompt(self, variables: dict[str, Any]) -> str:
        """``{session.name}`` is replaced by the session variable (empty if unset)."""
        return _TEMPLATE.sub(lambda m: str(variables.get(m.group(1), "")), self.instructions)


@dataclass
class RunState:
    """Everything needed to continue a run, also after a restart (stored as JSON).

    ``messages`` is the conversation without the system prompt (which is rebuilt from the
    current agent); ``base`` is where this run's own messages start (older ones came from
    the session)."""

    agent: str
    messages: list[Message]
    base: int = 0
    iterations: int = 0
    output_retries: int = 0
    decisions: dict[str, bool] = field(default_factory=dict)  # tool call id -> approved
    variables: dict[str, Any] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    compacted: bool = False

    def to_json(self) -> dict[str, Any]:
        u = self.usage
        return {"agent": self.agent, "messages": messages_to_json(self.messages), "base": self.base,
                "iterations": self.iterations, "output_retries": self.output_retries, "decisions": self.decisions,
                "variables": self.variables, "compacted": self.compacted,
                "usage": [u.input_tokens, u.output_tokens, u.cached_input_tokens, u.reasoning_tokens]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunState:
        return cls(agent=data["agent"], messages=messages_from_json(data.get("messages", [])),
                   base=int(data.get("base", 0)), iterations=int(data.get("iterations", 0)),
                   output_retries=int(data.get("output_retries", 0)), decisions=dict(data.get("decisions", {})),
                   variables=dict(data.get("variables", {})), compacted=bool(data.get("compacted", False)),
                   usage=Usage(*data.get("usage", [0, 0, 0, 0])))

    def pending_calls(self) -> list[Any]:
        """Tool calls of the last assistant message that have no result yet."""
        for index in range(len(self.messages) - 1, -1, -1):
            message = self.messages[index]
            if message.role == "assistant":
                answered = {m.tool_call_id for m in self.messages[index + 1:] if m.role == "tool"}
                return [c for c in message.tool_calls if c.id not in answered]
            if message.role != "tool":
                return []
        return []
