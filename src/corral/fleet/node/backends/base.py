"""The Backend protocol: how a node runs a session's turns, whatever runs the agent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# (event type, data) -> appended to the outbox, sent to the supervisor
Emit = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass(slots=True)
class TurnResult:
    text: str
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cost_usd: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class BackendError(Exception):
    pass


class Backend(Protocol):
    name: str
    kind: str

    async def start(self) -> None: ...

    async def create_session(self, project: str, directory: Path) -> str:
        """Returns the backend's own reference for the new session."""
        ...

    async def prompt(self, ref: str, text: str, emit: Emit) -> TurnResult: ...

    async def abort(self, ref: str) -> None: ...

    async def close_session(self, ref: str) -> None: ...

    async def aclose(self) -> None: ...
