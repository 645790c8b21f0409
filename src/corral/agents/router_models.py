"""The router as the runner's model access (`corral.agents.runner.Models`). With a meter,
every model call an agent run makes is charged (usage row, spend, tpm) to the caller
its `CallContext` names."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from corral.llm.router import CallContext, Router
from corral.llm.types import ChatRequest, ChatResult, StreamEvent, Usage, UsageEvent

log = logging.getLogger("corral.agents.models")

Meter = Callable[[str, CallContext, Usage, float], Awaitable[None]]  # alias, ctx, usage, started


class RouterModels:
    def __init__(self, router: Router, meter: Meter | None = None) -> None:
        self.router = router
        self.meter = meter

    async def complete(self, alias: str, request: ChatRequest, ctx: CallContext) -> ChatResult:
        started = time.perf_counter()
        result = await self.router.complete(alias, request, ctx)
        await self._charge(alias, ctx, result.usage, started)
        return result

    def stream(self, alias: str, request: ChatRequest, ctx: CallContext) -> AsyncIterator[StreamEvent]:
        events = self.router.stream(alias, request, ctx)
        return events if self.meter is None else self._metered(alias, events, ctx)

    async def _metered(self, alias: str, events: AsyncIterator[StreamEvent],
                       ctx: CallContext) -> AsyncIterator[StreamEvent]:
        started = time.perf_counter()
        usage = Usage()
        try:
            async for event in events:
                if isinstance(event, UsageEvent):
                    usage = usage + event.usage
                yield event
        finally:  # a stream that failed after reporting usage is charged what it reported
            await self._charge(alias, ctx, usage, started)

    async def _charge(self, alias: str, ctx: CallContext, usage: Usage, started: float) -> None:
        if self.meter is None or not (usage.input_tokens or usage.output_tokens):
            return
        try:
            await self.meter(alias, ctx, usage, started)
        except Exception:  # accounting never fails a run
            log.exception("could not charge a model call of an agent run")

    def context_window(self, alias: str) -> int | None:
        model = self.router.model_config(alias)
        return model.context_window if model is not None else None
