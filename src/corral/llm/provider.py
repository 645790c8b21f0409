"""The provider protocol: one implementation per wire API.

A provider owns one pooled HTTP client (closed by `aclose`) and never retries on
its own: retries, fallbacks and cooldowns belong to `corral.llm.router`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from corral.llm.readahead import ReadAhead
from corral.llm.types import ChatRequest, ChatResult, ModelInfo, StreamEvent


@runtime_checkable
class Provider(Protocol):
    name: str  # the configured provider name, e.g. "openai"

    async def complete(self, request: ChatRequest) -> ChatResult: ...

    def stream(self, request: ChatRequest, *, read_ahead: ReadAhead | None = None) -> AsyncIterator[StreamEvent]:
        """Yields events; the last ones are a `UsageEvent` (when known) and a `FinishEvent`.
        A provider that reads its events in batches sets ``read_ahead.more`` while the
        batch holds more (`corral.llm.readahead`); others may ignore it."""
        ...

    async def list_models(self) -> list[ModelInfo]: ...

    async def embed(self, texts: list[str], model: str) -> tuple[list[list[float]], int]:
        """Returns (vectors, input_tokens)."""
        ...

    async def aclose(self) -> None: ...
