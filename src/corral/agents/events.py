"""Neutral run events. The runner yields them; each edge (OpenAI chunks, A2A task
events, REST/SSE) translates them into its own wire format."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from corral.llm.types import Usage

RunStatus = Literal["completed", "failed", "cancelled", "input-required"]


@dataclass(slots=True)
class RunStarted:
    run_id: str
    agent: str
    type: Literal["run.started"] = "run.started"


@dataclass(slots=True)
class TextOutput:
    text: str
    agent: str = ""
    type: Literal["text.delta"] = "text.delta"


@dataclass(slots=True)
class ToolCalled:
    id: str
    name: str
    arguments: str
    agent: str = ""
    type: Literal["tool.call"] = "tool.call"


@dataclass(slots=True)
class ToolReturned:
    id: str
    name: str
    content: str
    is_error: bool = False
    agent: str = ""
    type: Literal["tool.result"] = "tool.result"


@dataclass(slots=True)
class ApprovalRequested:
    calls: list[dict[str, str]]  # [{"id", "name", "arguments"}]
    agent: str = ""
    type: Literal["approval.required"] = "approval.required"


@dataclass(slots=True)
class HandedOff:
    source: str
    target: str
    type: Literal["handoff"] = "handoff"


@dataclass(slots=True)
class Compacted:
    summarized_messages: int
    kept_messages: int
    tokens_before: int
    tokens_after: int
    type: Literal["compaction"] = "compaction"


@dataclass(slots=True)
class UsageReported:
    usage: Usage
    type: Literal["usage"] = "usage"


@dataclass(slots=True)
class RunFinished:
    status: RunStatus
    output: Any = None  # the final text, or the parsed JSON for agents with an output schema
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    type: Literal["run.finished"] = "run.finished"


RunEvent = (RunStarted | TextOutput | ToolCalled | ToolReturned | ApprovalRequested | HandedOff | Compacted
            | UsageReported | RunFinished)


def event_json(event: RunEvent) -> dict[str, Any]:
    data = asdict(event)
    return data
