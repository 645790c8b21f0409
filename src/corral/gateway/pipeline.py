"""The path of every model call, on every surface, top to bottom.

    authenticate  who is calling (before the body is read: an unauthenticated request
              costs no parsing and gets 401 whatever its body)
    open      resolve the model (404 in the surface's format) -> a `Call` on the
              request's `Exchange` -> admission (allowed model, rate limits and
              budgets: `Access`) -> the session header for agents
    complete  the target answers -> `finish`
    stream    the target's first event (an upstream failure before any output is a
              proper HTTP error) -> the surface's writer turns events into bytes ->
              `finish` before the last byte (the usage row is on disk before the client
              has its whole answer), or whatever else ends the stream: a client that
              leaves, an upstream error, the shutdown deadline (`Drain`); a stream with
              no usage from the upstream is billed for what it relayed (estimated)
    finish    the price -> metrics and the access log (`CallObserver`) -> usage row and counters
              (`Billing`); the call's span is the router's, in the caller's trace (`CallTracer`)

Surfaces (`openai.py`, `anthropic.py`, `responses.py`, `embeddings.py`, the agents' runs,
A2A and MCP) parse their wire format, then call these. Nothing here knows a wire format.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar

import anyio
from starlette.requests import Request
from starlette.responses import Response

from corral.gateway.access import Access
from corral.gateway.auth import Principal
from corral.gateway.billing import Billing
from corral.gateway.call import Call, ChatTarget, Models, Surface, exchange_of
from corral.gateway.drain import Drain, StreamCut
from corral.gateway.errors import ApiError
from corral.gateway.estimate import Relayed, input_tokens
from corral.gateway.metrics import CallObserver
from corral.gateway.streaming import EventStreamResponse
from corral.gateway.tracing import CallTracer
from corral.llm.errors import ProviderError
from corral.llm.pricing import PricingTable
from corral.llm.readahead import ReadAhead
from corral.llm.router import CallContext, aclose
from corral.llm.types import ChatRequest, ChatResult, StreamEvent, Usage

SESSION_HEADER = "x-corral-session-id"
T = TypeVar("T")

ErrorMapper = Callable[[ProviderError], ApiError]  # a provider failure in the surface's terms


class StreamWriter(Protocol):
    """Turns neutral events into one surface's stream bytes (`ChunkWriter` is the OpenAI one)."""

    usage: Usage | None

    def start(self) -> bytes: ...

    def event(self, event: StreamEvent) -> bytes | None: ...

    def end(self) -> bytes: ...

    def error(self, error: ApiError) -> bytes: ...


class ShuttingDown(ApiError):
    def __init__(self) -> None:
        super().__init__(503, "The server is shutting down; the stream was cut at its shutdown timeout",
                         code="server_shutting_down", type="server_error")


def model_not_found(model: str) -> ApiError:
    return ApiError(404, f"The model '{model}' does not exist or you do not have access to it.",
                    code="model_not_found", param="model")


class CallPipeline:
    def __init__(self, models: Models, access: Access, pricing: PricingTable, observer: CallObserver,
                 billing: Billing, tracer: CallTracer | None, drain: Drain | None = None) -> None:
        self.models = models
        self.access = access
        self.pricing = pricing
        self.observer = observer
        self.billing = billing
        self.tracer = tracer
        self.drain = drain

    # ---- admission ------------------------------------------------------------

    def begin(self, request: Request, model: str, surface: Surface, *, stream: bool = False,
              started: float | None = None) -> Call:
        """A call on this request, before admission (routes that resolve the name themselves)."""
        exchange = exchange_of(request)
        call = Call(exchange, surface, model, stream, time.perf_counter() if started is None else started,
                    CallContext(request_id=exchange.request_id))
        exchange.call = call
        if self.tracer is not None:
            self.tracer.begin(request, call)
        return call

    async def admit(self, request: Request, call: Call, principal: Principal | None = None) -> None:
        await self.access.admit(request, call, principal)

    async def open(self, request: Request, principal: Principal, model: str, surface: Surface, *, stream: bool,
                   started: float, chat: ChatRequest | None = None) -> tuple[ChatTarget, Call]:
        """The start every chat call shares: resolve, open the call, admit the caller
        (authenticated by the route before it read the body; ``chat``: what the call asks
        for, so its budget reservation can be priced)."""
        target = self.models.resolve(model)
        if target is None:
            raise model_not_found(model)
        # Counted, limited and billed as the model that serves it (``default_model`` may).
        call = self.begin(request, target.name, surface, stream=stream, started=started)
        call.request = chat
        await self.access.admit(request, call, principal)
        call.session_id = request.headers.get(SESSION_HEADER) or None
        return target, call

    async def authenticate(self, request: Request) -> Principal:
        """The caller of a route that is not a model call (raises `ApiError` like `admit`)."""
        return await self.access.authenticate(request)

    # ---- the call ---------------------------------------------------------------

    async def complete(self, target: ChatTarget, chat: ChatRequest, call: Call,
                       to_api_error: ErrorMapper = ApiError.from_provider) -> ChatResult:
        """One non-stream call with its bookkeeping."""
        return await self.settle(call, target.complete(chat, call), _result_usage, to_api_error)

    async def settle(self, call: Call, work: Awaitable[T], usage_of: Callable[[T], Usage | None],
                     to_api_error: ErrorMapper = ApiError.from_provider) -> T:
        """Await a non-stream upstream call, then `finish` it, whatever its outcome; a
        provider failure is raised as the surface's error."""
        try:
            result = await work
        except ProviderError as exc:
            call.fail(exc.status, exc)
            await self.finish(call)
            raise to_api_error(exc) from None
        except BaseException as exc:  # cancelled (shutdown): its reservation is still released
            call.fail(499, exc)
            with anyio.CancelScope(shield=True):
                await self.finish(call)
            raise
        finally:
            call.exchange.upstream_seconds = call.ctx.upstream_seconds
        call.usage = usage_of(result)
        await self.finish(call)
        return result

    async def stream(self, target: ChatTarget, chat: ChatRequest, call: Call, writer: StreamWriter,
                     to_api_error: ErrorMapper = ApiError.from_provider) -> Response:
        ahead = ReadAhead()
        call.ctx.read_ahead = ahead  # the provider's SSE reader says when more events are in memory
        try:
            events, first = await open_stream(target, chat, call)
        except ProviderError as exc:
            call.fail(exc.status, exc)
            await self.finish(call)
            raise to_api_error(exc) from None
        finally:
            call.exchange.upstream_seconds = call.ctx.upstream_seconds
        call.ttft_seconds = time.perf_counter() - call.started

        drain = self.drain
        relayed = Relayed()

        async def body() -> AsyncIterator[bytes]:
            try:
                yield writer.start()
                if first is not None:
                    relayed.add(first)
                    chunk = writer.event(first)
                    if chunk:
                        yield chunk
                async for event in events:
                    relayed.add(event)
                    chunk = writer.event(event)
                    if chunk:
                        yield chunk
                await self._close(call, writer, relayed, events)  # durable before the last byte
                yield writer.end()
            except ProviderError as exc:
                call.fail(exc.status, exc)
                await self._close(call, writer, relayed, events)
                yield writer.error(to_api_error(exc))
            except StreamCut:  # the shutdown deadline, while the response was sending
                call.fail(503, ShuttingDown())
                await self._close(call, writer, relayed, events)
                yield writer.error(ShuttingDown())
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if drain is None or not drain.was_cut(task) or task is None:
                    call.fail(499, exc)  # the client went away
                    raise
                task.uncancel()  # the shutdown deadline, while waiting on the upstream
                call.fail(503, ShuttingDown())
                await self._close(call, writer, relayed, events)
                yield writer.error(ShuttingDown())
            except BaseException as exc:  # a bug: still recorded
                call.fail(499, exc)
                raise
            finally:
                # The upstream stream must be closed and the call recorded whatever happens:
                # from here the response no longer cancels us when the client leaves, and
                # when we are unwinding a cancellation already, the rest is shielded.
                if not call.finished:
                    ahead.settling = True
                    task = asyncio.current_task()
                    unwinding = task is not None and task.cancelling() > 0
                    with anyio.CancelScope(shield=True) if unwinding else contextlib.nullcontext():
                        await self._close(call, writer, relayed, events)

        return EventStreamResponse(body(), ahead=ahead, drain=drain)

    async def _close(self, call: Call, writer: StreamWriter, relayed: Relayed,
                     events: AsyncIterator[StreamEvent]) -> None:
        """A stream's end: the upstream closed, its usage known (counted from what it
        relayed when the upstream reported none), the call finished."""
        if call.finished:
            return
        ahead = call.ctx.read_ahead
        if ahead is not None:
            ahead.settling = True  # a client leaving now no longer cancels the bookkeeping
        await aclose(events)
        call.usage = writer.usage
        if call.usage is None and relayed.chars:
            chat = call.request
            call.usage = Usage(input_tokens(chat) if chat is not None else 0, relayed.tokens)
            call.estimated = True
        await self.finish(call)

    async def finish(self, call: Call) -> None:
        """The call is over: priced, observed, billed (its span is the router's). Never
        blocks on a database."""
        if call.usage is not None:  # as the alias first, then the upstream id (docs/pricing.md)
            call.cost_usd = self.pricing.cost(call.usage, call.model, call.ctx.upstream_model)
        self.observer.finished(call)
        await self.billing.settle(call)


def _result_usage(result: ChatResult) -> Usage | None:
    return result.usage


async def open_stream(target: ChatTarget, chat: ChatRequest,
                      call: Call) -> tuple[AsyncIterator[StreamEvent], StreamEvent | None]:
    """Start a stream and wait for its first event, so that an upstream failure before
    any output becomes a proper HTTP error instead of a broken stream."""
    events = target.stream(chat, call)
    try:
        first = await events.__anext__()
    except StopAsyncIteration:
        return events, None
    except BaseException:
        await aclose(events)
        raise
    return events, first
