"""Model aliases -> deployments -> providers, with retries, fallbacks and cooldowns.

The router is the only place that decides which upstream serves a request, and the
only place that retries (providers never do):

- **Strategies** pick among an alias's healthy deployments: ``weighted`` (weighted
  random), ``least-busy`` (fewest calls in flight), ``lowest-latency`` (lowest moving
  average; an untried deployment goes first).
- **Retries** on retryable errors (429, 5xx, connection failures, timeouts, garbage
  bodies), up to ``num_retries`` more attempts, preferring a deployment not yet tried,
  with exponential backoff and full jitter; a ``retry-after`` is honoured (a longer
  one than ``router.max_retry_after`` goes straight to the fallbacks).
- **Fallbacks**: when an alias is exhausted, its ``fallbacks`` aliases are tried in
  order; a context-length error goes to ``context_fallbacks`` instead.
- **Cooldowns**: a deployment that fails ``allowed_fails`` times in a row is skipped
  for ``cooldown_seconds`` (unless every deployment is cooling down).
- A stream is retried only until its first event: after that the client has output.
- **Shared health** (optional): with a `HealthSink` attached (`corral.llm.cooldowns`,
  Redis), a cooldown started or ended here is announced to the other replicas, which
  apply it to their own copy of the state (`apply_cooldown`); picking never waits on it.

`CallContext` carries what the edges need afterwards: the deployment used, attempts,
and time spent upstream (the gateway subtracts it to publish its own overhead); and, in,
the trace the call belongs to (``trace``): with a `Tracing`, each call is one ``chat``
span under it (`corral.llm.tracing`), its failed attempts and fallbacks as span events;
and, for a stream, the writer's `ReadAhead` (``read_ahead``), which the router hands to
the provider.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from opentelemetry.context import Context

from corral.config.schema import Deployment, ModelConfig, RouterConfig
from corral.llm import errors
from corral.llm.pricing import PricingTable
from corral.llm.provider import Provider
from corral.llm.readahead import ReadAhead
from corral.llm.tracing import ChatSpan
from corral.llm.types import ChatRequest, ChatResult, ModelInfo, StreamEvent, Usage, UsageEvent
from corral.telemetry.tracing import Tracing

log = logging.getLogger("corral.router")
T = TypeVar("T")

# Errors that say "this deployment cannot serve", not "the request is wrong": fall back.
_FALLBACK_ERRORS = (errors.AuthenticationError, errors.PermissionDeniedError, errors.NotFoundError)


@dataclass(slots=True)
class CallContext:
    request_id: str = ""
    alias: str = ""
    provider: str | None = None
    upstream_model: str | None = None
    attempts: int = 0
    upstream_seconds: float = 0.0  # non-stream: all attempts; stream: until the first event
    first_event_at: float | None = None  # perf_counter() of the first streamed event
    errors: list[str] = field(default_factory=list)  # one line per failed attempt
    # A model call of an agent run: the run, its agent, and who it is charged to (the
    # caller's JSON, kept with the run so a resumed run charges the same caller).
    run_id: str | None = None
    agent: str | None = None
    caller: Mapping[str, object] | None = None
    # Streams: shared with the writer of the gateway's response (see `corral.llm.readahead`).
    read_ahead: ReadAhead | None = None
    trace: Context | None = None  # the parent of this call's span (a run's agent span, a request's)
    span_attributes: Mapping[str, str | bool | int] | None = None  # the caller's, added to this call's span


@dataclass(slots=True)
class DeploymentState:
    alias: str
    deployment: Deployment
    in_flight: int = 0
    latency: float | None = None  # exponential moving average, seconds
    consecutive_fails: int = 0
    cooldown_until: float = 0.0
    successes: int = 0
    failures: int = 0
    params: dict[str, object] | None = None  # alias and deployment params, merged on first use
    timeout: float | None = None  # the deployment's, else the alias's (set with params)

    @property
    def key(self) -> str:
        return f"{self.deployment.provider}/{self.deployment.model}"

    def cooling(self, now: float) -> bool:
        return self.cooldown_until > now


class HealthSink(Protocol):
    """Told when a deployment starts or ends a cooldown (must not block: it queues)."""

    def cooled(self, alias: str, key: str, seconds: float) -> None: ...

    def recovered(self, alias: str, key: str) -> None: ...


class Router:
    def __init__(
        self,
        models: Mapping[str, ModelConfig],
        providers: Mapping[str, Provider],
        *,
        settings: RouterConfig | None = None,
        passthrough: frozenset[str] = frozenset(),
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        tracing: Tracing | None = None,
        pricing: PricingTable | None = None,  # for the cost on spans
        provider_types: Mapping[str, str] | None = None,  # provider name -> wire type, for spans
    ) -> None:
        self._tracing = tracing
        self._pricing = pricing
        self._models = dict(models)
        self._providers = dict(providers)
        self._provider_types = dict(provider_types or {})
        self._settings = settings or RouterConfig()
        self._passthrough = passthrough  # providers that serve any "<provider>/<model>" name
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._clock = clock
        self._states: dict[str, list[DeploymentState]] = {}
        self.health_sink: HealthSink | None = None

    @property
    def providers(self) -> Mapping[str, Provider]:
        return self._providers

    def has_model(self, alias: str) -> bool:
        return bool(self._deployment_states(alias))

    def model_config(self, alias: str) -> ModelConfig | None:
        return self._models.get(alias)

    def list_models(self) -> list[ModelInfo]:
        return [
            ModelInfo(id=alias, owned_by="corral", context_window=m.context_window,
                      max_output_tokens=m.max_output_tokens)
            for alias, m in self._models.items() if self.has_model(alias)
        ]

    def deployment_states(self) -> list[DeploymentState]:
        """Every deployment's health (for metrics and `/v1/startup/verification`)."""
        for alias in self._models:
            self._deployment_states(alias)
        return [s for states in self._states.values() for s in states]

    def apply_cooldown(self, alias: str, key: str, seconds: float) -> bool:
        """Another replica cooled a deployment down (``seconds`` > 0) or saw it recover
        (``seconds`` <= 0). False if this router does not know the deployment."""
        state = next((s for s in self._deployment_states(alias) if s.key == key), None)
        if state is None:
            return False
        if seconds > 0:
            state.cooldown_until = max(state.cooldown_until, self._clock() + seconds)
        else:
            state.cooldown_until = 0.0
            state.consecutive_fails = 0
        return True

    def _deployment_states(self, alias: str) -> list[DeploymentState]:
        states = self._states.get(alias)
        if states is not None:
            return states
        model = self._models.get(alias)
        if model is not None:
            deployments = [d for d in model.all_deployments() if d.provider in self._providers]
        else:
            provider, _, upstream = alias.partition("/")
            if not (upstream and provider in self._passthrough and provider in self._providers):
                return []
            deployments = [Deployment(provider=provider, model=upstream)]
        states = [DeploymentState(alias, d) for d in deployments]
        self._states[alias] = states
        return states

    # ---- choosing ---------------------------------------------------------

    def _pick(self, alias: str, tried: set[str]) -> DeploymentState:
        states = self._deployment_states(alias)
        if len(states) == 1:  # the usual alias: nothing to choose (cooling or not, it is the one)
            return states[0]
        if not states:
            raise errors.NotFoundError(f"The model '{alias}' does not exist or has no enabled deployment")
        now = self._clock()
        fresh = [s for s in states if s.key not in tried] or states
        healthy = [s for s in fresh if not s.cooling(now)]
        if not healthy:  # everything is cooling down: try the one that recovers first
            return min(fresh, key=lambda s: s.cooldown_until)
        if len(healthy) == 1:
            return healthy[0]
        strategy = self._models[alias].strategy if alias in self._models else "weighted"
        if strategy == "least-busy":
            low = min(s.in_flight for s in healthy)
            return self._rng.choice([s for s in healthy if s.in_flight == low])
        if strategy == "lowest-latency":
            untried = [s for s in healthy if s.latency is None]
            if untried:
                return self._rng.choice(untried)
            return min(healthy, key=lambda s: s.latency or 0.0)
        return self._rng.choices(healthy, weights=[s.deployment.weight for s in healthy])[0]

    def _request_for(self, state: DeploymentState, request: ChatRequest) -> ChatRequest:
        if state.params is None:  # the alias's and the deployment's settings, merged once
            model = self._models.get(state.alias)
            state.params = {**(model.params if model and model.deployments else {}), **state.deployment.params}
            state.timeout = state.deployment.timeout or (model.timeout if model else None)
        upstream = _with_params(request, state.deployment.model, state.params)
        if upstream.timeout is None:
            upstream.timeout = state.timeout
        return upstream

    # ---- outcomes ---------------------------------------------------------

    def _succeeded(self, state: DeploymentState, seconds: float) -> None:
        if state.cooldown_until and self.health_sink is not None:
            self.health_sink.recovered(state.alias, state.key)  # rare: only after a cooldown
        state.consecutive_fails = 0
        state.cooldown_until = 0.0
        state.successes += 1
        state.latency = seconds if state.latency is None else 0.8 * state.latency + 0.2 * seconds

    def _failed(self, state: DeploymentState, error: errors.ProviderError, ctx: CallContext) -> None:
        state.failures += 1
        ctx.errors.append(f"{state.key}: {type(error).__name__}: {error.message}")
        if not (error.retryable or isinstance(error, _FALLBACK_ERRORS)):
            return
        state.consecutive_fails += 1
        if state.consecutive_fails >= self._settings.allowed_fails:
            state.cooldown_until = self._clock() + self._settings.cooldown_seconds
            log.warning("deployment %s cooling down for %.0fs after %d failures", state.key,
                        self._settings.cooldown_seconds, state.consecutive_fails)
            if self.health_sink is not None:
                self.health_sink.cooled(state.alias, state.key, self._settings.cooldown_seconds)

    def _rest(self, state: DeploymentState, error: errors.ProviderError) -> None:
        if error.retry_after is None or state.cooldown_until > self._clock() + error.retry_after:
            return
        state.cooldown_until = self._clock() + error.retry_after
        if self.health_sink is not None:
            self.health_sink.cooled(state.alias, state.key, error.retry_after)

    def _backoff(self, attempt: int, error: errors.ProviderError) -> float | None:
        """Seconds to wait before the next attempt, or None to stop retrying this alias."""
        if error.retry_after is not None:
            if error.retry_after > self._settings.max_retry_after:
                return None
            return error.retry_after
        cap = min(self._settings.backoff_max, self._settings.backoff_base * (2 ** attempt))
        return self._rng.uniform(0, cap)

    # ---- the plan: aliases in order, attempts within each --------------------

    async def _run(
        self,
        alias: str,
        ctx: CallContext,
        attempt: Callable[[DeploymentState], Awaitable[T]],
        span: ChatSpan | None = None,
    ) -> T:
        queue, visited = [alias], set()
        last: errors.ProviderError | None = None
        while queue:
            current = queue.pop(0)
            if current in visited:
                continue
            visited.add(current)
            try:
                return await self._run_alias(current, ctx, attempt, span)
            except errors.ContextLengthError as exc:
                last = exc
                queue = self._fallbacks(current, context=True) + queue
            except errors.ProviderError as exc:
                if not (exc.retryable or isinstance(exc, _FALLBACK_ERRORS)):
                    raise
                last = exc
                queue += self._fallbacks(current, context=False)
            if queue:
                log.info("falling back from %s: %s", current, last)
                if span is not None:
                    span.fallback(current, queue, last)
        assert last is not None
        raise last

    def _fallbacks(self, alias: str, *, context: bool) -> list[str]:
        model = self._models.get(alias)
        if model is None:
            return []
        return list(model.context_fallbacks if context else model.fallbacks)

    async def _run_alias(
        self, alias: str, ctx: CallContext, attempt: Callable[[DeploymentState], Awaitable[T]],
        span: ChatSpan | None,
    ) -> T:
        model = self._models.get(alias)
        retries = model.num_retries if model else 2
        deployments = len(self._deployment_states(alias))
        tried: set[str] = set()
        number = 0
        while True:
            state = self._pick(alias, tried)
            tried.add(state.key)
            ctx.alias, ctx.provider, ctx.upstream_model = alias, state.deployment.provider, state.deployment.model
            ctx.attempts += 1
            if span is not None:
                provider = state.deployment.provider
                span.attempt(state.key, self._provider_types.get(provider, provider), state.deployment.model,
                             ctx.attempts)
            started = time.perf_counter()
            state.in_flight += 1
            try:
                result = await attempt(state)
            except errors.ProviderError as exc:
                self._failed(state, exc, ctx)
                if isinstance(exc, _FALLBACK_ERRORS) and len(tried) < deployments:
                    if span is not None:
                        span.attempt_failed(state.key, exc, retry_in=0.0)
                    continue  # this deployment cannot serve (bad key, no such model): try the next now
                delay = None if not exc.retryable or number >= retries else self._backoff(number, exc)
                if span is not None:
                    span.attempt_failed(state.key, exc, retry_in=delay)
                if delay is None:
                    if exc.retryable and exc.retry_after is not None and number < retries:
                        # It asks for a longer wait than a call is held for: rest it that long,
                        # and let a sibling deployment serve this call now.
                        self._rest(state, exc)
                        if len(tried) < deployments:
                            continue
                    raise
                number += 1
                await self._sleep(delay)
                continue
            finally:
                state.in_flight -= 1
            self._succeeded(state, time.perf_counter() - started)
            return result

    # ---- public calls ---------------------------------------------------------

    async def complete(self, alias: str, request: ChatRequest, ctx: CallContext) -> ChatResult:
        async def attempt(state: DeploymentState) -> ChatResult:
            upstream = self._request_for(state, request)
            started = time.perf_counter()
            try:
                if upstream.timeout:
                    async with asyncio.timeout(upstream.timeout):
                        return await self._providers[state.deployment.provider].complete(upstream)
                return await self._providers[state.deployment.provider].complete(upstream)
            except builtins.TimeoutError:
                raise errors.UpstreamTimeout(f"no answer within {upstream.timeout:g}s",
                                          provider=state.deployment.provider) from None
            finally:
                ctx.upstream_seconds += time.perf_counter() - started

        if self._tracing is None:
            return await self._run(alias, ctx, attempt)
        span = ChatSpan(self._tracing, "chat", alias, ctx.trace, self._pricing, ctx.span_attributes)
        span.request(request)
        try:
            result = await self._run(alias, ctx, attempt, span)
        except BaseException as exc:
            span.end(exc)
            raise
        span.result(result)
        span.end()
        return result

    async def _open_stream(self, state: DeploymentState, request: ChatRequest, ctx: CallContext,
                           chosen: list[DeploymentState]) -> tuple[AsyncIterator[StreamEvent], StreamEvent | None]:
        """One attempt of a stream: until its first event (after that there is no retry)."""
        chosen.append(state)
        upstream = self._request_for(state, request)
        events = self._providers[state.deployment.provider].stream(upstream, read_ahead=ctx.read_ahead)
        started = time.perf_counter()
        try:
            if upstream.timeout:
                async with asyncio.timeout(upstream.timeout):
                    first = await anext(events, None)
            else:
                first = await anext(events, None)
        except builtins.TimeoutError:
            await aclose(events)
            raise errors.UpstreamTimeout(f"no first token within {upstream.timeout:g}s",
                                      provider=state.deployment.provider) from None
        except BaseException:
            await aclose(events)
            raise
        finally:
            ctx.upstream_seconds += time.perf_counter() - started
        ctx.first_event_at = time.perf_counter()
        return events, first

    async def stream(self, alias: str, request: ChatRequest, ctx: CallContext) -> AsyncIterator[StreamEvent]:
        chosen: list[DeploymentState] = []

        def attempt(state: DeploymentState) -> Awaitable[tuple[AsyncIterator[StreamEvent], StreamEvent | None]]:
            return self._open_stream(state, request, ctx, chosen)

        span: ChatSpan | None = None
        if self._tracing is not None:
            span = ChatSpan(self._tracing, "chat", alias, ctx.trace, self._pricing, ctx.span_attributes)
            span.request(request)
        try:
            events, first = await self._run(alias, ctx, attempt, span)
        except BaseException as exc:
            if span is not None:
                span.end(exc)
            raise
        failure: BaseException | None = None
        try:
            if span is None:
                if first is not None:
                    yield first
                async for event in events:
                    yield event
            else:
                if first is not None:
                    span.event(first)
                    yield first
                async for event in events:
                    span.event(event)
                    yield event
        except errors.ProviderError as exc:
            failure = exc
            self._failed(chosen[-1], exc, ctx)  # too late to retry, but it counts against the deployment
            raise
        except Exception as exc:
            failure = exc
            raise
        finally:
            await aclose(events)
            if span is not None:
                span.end(failure)

    async def embed(self, alias: str, texts: list[str], ctx: CallContext) -> tuple[list[list[float]], int]:
        async def attempt(state: DeploymentState) -> tuple[list[list[float]], int]:
            started = time.perf_counter()
            try:
                return await self._providers[state.deployment.provider].embed(texts, state.deployment.model)
            finally:
                ctx.upstream_seconds += time.perf_counter() - started

        if self._tracing is None:
            return await self._run(alias, ctx, attempt)
        span = ChatSpan(self._tracing, "embeddings", alias, ctx.trace, self._pricing, ctx.span_attributes)
        try:
            vectors, tokens = await self._run(alias, ctx, attempt, span)
        except BaseException as exc:
            span.end(exc)
            raise
        span.event(UsageEvent(Usage(input_tokens=tokens)))
        span.end()
        return vectors, tokens

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
    upstream = request.for_upstream(upstream_model)
    for key, value in params.items():
        if key in _KNOWN_PARAMS:
            if getattr(upstream, key) is None:
                setattr(upstream, key, value)
        else:
            upstream.extra.setdefault(key, value)
    return upstream


_KNOWN_PARAMS = frozenset({"temperature", "top_p", "max_tokens", "seed"})
