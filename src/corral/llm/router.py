"""Model aliases -> deployments -> providers.

The router is the only place that decides which upstream serves a request, and the
only place that retries (providers never do). `CallContext` carries what the edges
need to know afterwards: the deployment used, attempts, and time spent upstream
(which the gateway subtracts to publish its own overhead).
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from corral.config.schema import Deployment, ModelConfig
from corral.llm.errors import NotFoundError
from corral.llm.provider import Provider
from corral.llm.types import ChatRequest, ChatResult, ModelInfo, StreamEvent


@dataclass(slots=True)
class CallContext:
    request_id: str = ""
    alias: str = ""
    provider: str | None = None
    upstream_model: str | None = None
    attempts: int = 0
    upstream_seconds: float = 0.0  # non-stream: whole call; stream: until the first event
    first_event_at: float | None = None  # perf_counter() of the first streamed event
    extra: dict[str, object] = field(default_factory=dict)


class Router:
    def __init__(
        self,
        models: Mapping[str, ModelConfig],
        providers: Mapping[str, Provider],
        *,
        passthrough: frozenset[str] = frozenset(),
        rng: random.Random | None = None,
    ) -> None:
        self._models = dict(models)
        self._providers = dict(providers)
        self._passthrough = passthrough  # providers that serve any "<provider>/<model>" name
        self._rng = rng or random.Random()

    @property
    def providers(self) -> Mapping[str, Provider]:
        return self._providers

    def has_model(self, alias: str) -> bool:
        return self._deployments(alias) is not None

    def model_config(self, alias: str) -> ModelConfig | None:
        return self._models.get(alias)

    def list_models(self) -> list[ModelInfo]:
        return [
            ModelInfo(id=alias, owned_by="corral", context_window=m.context_window,
                      max_output_tokens=m.max_output_tokens)
            for alias, m in self._models.items()
        ]

    def _deployments(self, alias: str) -> list[Deployment] | None:
        model = self._models.get(alias)
        if model is not None:
            return [d for d in model.all_deployments() if d.provider in self._providers]
        provider, _, upstream = alias.partition("/")
        if upstream and provider in self._passthrough and provider in self._providers:
            return [Deployment(provider=provider, model=upstream)]
        return None

    def _pick(self, alias: str) -> Deployment:
        deployments = self._deployments(alias)
        if not deployments:
            raise NotFoundError(f"The model '{alias}' does not exist or has no enabled deployment")
        if len(deployments) == 1:
            return deployments[0]
        return self._rng.choices(deployments, weights=[d.weight for d in deployments])[0]

    def _prepare(self, alias: str, request: ChatRequest, ctx: CallContext) -> tuple[Provider, ChatRequest]:
        deployment = self._pick(alias)
        model = self._models.get(alias)
        params = {**(model.params if model and model.deployments else {}), **deployment.params}
        upstream = _with_params(request, deployment.model, params)
        if upstream.timeout is None:
            upstream.timeout = deployment.timeout or (model.timeout if model else None)
        ctx.alias = alias
        ctx.provider = deployment.provider
        ctx.upstream_model = deployment.model
        ctx.attempts += 1
        return self._providers[deployment.provider], upstream

    async def complete(self, alias: str, request: ChatRequest, ctx: CallContext) -> ChatResult:
        provider, upstream = self._prepare(alias, request, ctx)
        started = time.perf_counter()
        try:
            return await provider.complete(upstream)
        finally:
            ctx.upstream_seconds += time.perf_counter() - started

    async def stream(self, alias: str, request: ChatRequest, ctx: CallContext) -> AsyncIterator[StreamEvent]:
        provider, upstream = self._prepare(alias, request, ctx)
        started = time.perf_counter()
        events = provider.stream(upstream)
        try:
            async for event in events:
                if ctx.first_event_at is None:
                    ctx.first_event_at = time.perf_counter()
                    ctx.upstream_seconds += ctx.first_event_at - started
                yield event
        finally:
            await aclose(events)

    async def embed(self, alias: str, texts: list[str], ctx: CallContext) -> tuple[list[list[float]], int]:
        deployment = self._pick(alias)
        ctx.alias, ctx.provider, ctx.upstream_model = alias, deployment.provider, deployment.model
        ctx.attempts += 1
        started = time.perf_counter()
        try:
            return await self._providers[deployment.provider].embed(texts, deployment.model)
        finally:
            ctx.upstream_seconds += time.perf_counter() - started

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()


async def aclose(iterator: AsyncIterator[object]) -> None:
    """Close an async generator early (closes the upstream connection it holds)."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


def _with_params(request: ChatRequest, upstream_model: str, params: Mapping[str, object]) -> ChatRequest:
    """A copy of the request for one upstream: its model id, and alias params as defaults
    (what the client sent wins)."""
    from dataclasses import replace

    known = {"temperature", "top_p", "max_tokens", "seed"}
    updates: dict[str, object] = {"model": upstream_model}
    extra = dict(request.extra)
    for key, value in params.items():
        if key in known:
            if getattr(request, key) is None:
                updates[key] = value
        else:
            extra.setdefault(key, value)
    updates["extra"] = extra
    return replace(request, **updates)  # type: ignore[arg-type]
