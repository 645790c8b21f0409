"""The gateway's state: one object, built from the config by the app factory and
handed to every route module. Nothing lives in module globals."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.requests import Request

from corral.config.schema import CorralConfig
from corral.llm.router import CallContext, Router
from corral.llm.types import ChatRequest, ChatResult, ModelInfo, StreamEvent, Usage

Hook = Callable[[], Awaitable[None]]
Guard = Callable[[Request], Awaitable[object]]


class ChatTarget(Protocol):
    """What a chat request can be served by: a model alias (through the router) or an agent."""

    async def complete(self, request: ChatRequest, ctx: CallContext) -> ChatResult: ...

    def stream(self, request: ChatRequest, ctx: CallContext) -> AsyncIterator[StreamEvent]: ...


@dataclass(slots=True)
class RouterTarget:
    router: Router
    alias: str

    async def complete(self, request: ChatRequest, ctx: CallContext) -> ChatResult:
        return await self.router.complete(self.alias, request, ctx)

    def stream(self, request: ChatRequest, ctx: CallContext) -> AsyncIterator[StreamEvent]:
        return self.router.stream(self.alias, request, ctx)


@dataclass(slots=True)
class CallRecord:
    """What happened to one model call, handed to every interceptor's `finish`."""

    request_id: str
    surface: str  # "openai" | "anthropic" | "responses" | "embeddings" | "a2a" | ...
    model: str  # as the client named it
    stream: bool
    ctx: CallContext
    started: float  # perf_counter() when the request arrived at the route
    status: int = 200
    usage: Usage | None = None
    error: BaseException | None = None
    ttft_seconds: float | None = None


class Interceptor(Protocol):
    """Auth, limits, budgets, usage recording and metrics hook in here.

    `admit` runs before the upstream call and may raise `ApiError` (rendered in the
    surface's format); it may stash what it needs on ``request.state``. `finish` runs
    once the call is over (after the last chunk of a stream) and must not block: it
    enqueues, it does not write to a database."""

    async def admit(self, request: Request, model: str, surface: str) -> None: ...

    async def finish(self, request: Request, record: CallRecord) -> None: ...


TargetResolver = Callable[[str], ChatTarget | None]
ModelLister = Callable[[], list[ModelInfo]]


@dataclass
class Gateway:
    config: CorralConfig
    router: Router
    notes: list[str] = field(default_factory=list)
    ready: bool = False
    started_at: float = field(default_factory=time.time)
    # Features attach themselves here at build time (auth, limits, store, agents, ...).
    components: dict[str, Any] = field(default_factory=dict)
    interceptors: list[Interceptor] = field(default_factory=list)
    guards: list[Guard] = field(default_factory=list)  # for routes that are not model calls
    resolvers: list[TargetResolver] = field(default_factory=list)
    model_listers: list[ModelLister] = field(default_factory=list)
    startup_hooks: list[Hook] = field(default_factory=list)
    shutdown_hooks: list[Hook] = field(default_factory=list)

    def resolve(self, model: str) -> ChatTarget | None:
        """Agents (and any other resolver) first, then router aliases."""
        for resolver in self.resolvers:
            target = resolver(model)
            if target is not None:
                return target
        if self.router.has_model(model):
            return RouterTarget(self.router, model)
        return None

    async def guard(self, request: Request) -> None:
        """Authenticate a request to a route that is not a model call (model lists,
        metrics, reports): raises `ApiError` like `admit` does."""
        for check in self.guards:
            await check(request)

    async def admit(self, request: Request, model: str, surface: str) -> None:
        for interceptor in self.interceptors:
            await interceptor.admit(request, model, surface)

    async def finish(self, request: Request, record: CallRecord) -> None:
        for interceptor in self.interceptors:
            await interceptor.finish(request, record)

    def list_models(self) -> list[ModelInfo]:
        seen: dict[str, ModelInfo] = {m.id: m for m in self.router.list_models()}
        for lister in self.model_listers:
            for info in lister():
                seen.setdefault(info.id, info)
        return list(seen.values())

    async def startup(self) -> None:
        for hook in self.startup_hooks:
            await hook()
        self.ready = True

    async def shutdown(self) -> None:
        self.ready = False
        # Reverse order: what started last depends on what started first.
        for hook in reversed(self.shutdown_hooks):
            await hook()
        await self.router.aclose()
