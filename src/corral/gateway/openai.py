"""OpenAI-compatible routes: `POST /v1/chat/completions`, `GET /v1/models`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from corral.gateway.errors import ApiError
from corral.gateway.openai_format import (
    ChunkWriter,
    completion_json,
    read_body,
    to_neutral,
    validate_chat_json,
)
from corral.gateway.state import CallRecord, ChatTarget, Gateway
from corral.gateway.streaming import EventStreamResponse
from corral.ids import new_id
from corral.llm.errors import ProviderError
from corral.llm.readahead import READ_AHEAD, ReadAhead
from corral.llm.router import CallContext, aclose
from corral.llm.types import ChatRequest, ChatResult, StreamEvent, Usage

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def json_response(data: object, status: int = 200) -> Response:
    return JSONBytes(orjson.dumps(data), status)


class JSONBytes(Response):
    """A JSON response from bytes already encoded: its two headers written directly
    (Starlette's `init_headers` costs as much as encoding a small answer)."""

    media_type = "application/json"

    def __init__(self, body: bytes, status_code: int = 200) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        self.raw_headers = [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]


def model_not_found(model: str) -> ApiError:
    return ApiError(404, f"The model '{model}' does not exist or you do not have access to it.",
                    code="model_not_found", param="model")


async def begin_call(
    gateway: Gateway, request: Request, model: str, surface: str, *, stream: bool, started: float
) -> tuple[ChatTarget, CallRecord]:
    """The start every model call shares: resolve the model (404 in the surface's error
    format), admit the caller (auth, limits, budgets), open the call's record."""
    target = gateway.resolve(model)
    if target is None:
        raise model_not_found(model)
    await gateway.admit(request, model, surface)
    request_id = request.scope["state"]["request_id"]  # set by CorralMiddleware
    return target, CallRecord(request_id, surface, model, stream, CallContext(request_id=request_id), started)


def routes(gateway: Gateway) -> list[BaseRoute]:
    async def chat_completions(request: Request) -> Response:
        started = time.perf_counter()
        body = validate_chat_json(await read_body(request))
        chat = to_neutral(body)  # before admit: a request we refuse as invalid uses no rate limit
        target, record = await begin_call(gateway, request, body.model, "openai", stream=body.stream, started=started)
        created = int(time.time())
        completion_id = f"chatcmpl-{new_id()}"
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            writer = ChunkWriter(id=completion_id, created=created, model=body.model, include_usage=include_usage)
            return await stream_chat(gateway, request, target, chat, record, writer)
        result = await complete_chat(gateway, request, target, chat, record)
        return json_response(completion_json(result, id=completion_id, created=created, model=body.model))

    async def list_models(request: Request) -> Response:
        await gateway.guard(request)
        models = gateway.list_models()
        data = [{"id": m.id, "object": "model", "created": int(gateway.started_at), "owned_by": m.owned_by}
                for m in models]
        return json_response({"object": "list", "data": data})

    async def get_model(request: Request) -> Response:
        await gateway.guard(request)
        model_id = request.path_params["model"]
        for m in gateway.list_models():
            if m.id == model_id:
                return json_response({"id": m.id, "object": "model", "created": int(gateway.started_at),
                                      "owned_by": m.owned_by})
        raise model_not_found(model_id)

    return [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
    ]


async def complete_chat(
    gateway: Gateway,
    request: Request,
    target: ChatTarget,
    chat: ChatRequest,
    record: CallRecord,
    to_api_error: Callable[[ProviderError], ApiError] = ApiError.from_provider,
) -> ChatResult:
    """One non-stream call with its bookkeeping (upstream time, interceptors' finish)."""
    try:
        result = await target.complete(chat, record.ctx)
    except ProviderError as exc:
        record.status, record.error = exc.status, exc
        await gateway.finish(request, record)
        raise to_api_error(exc) from None
    finally:
        request.scope["state"]["upstream_seconds"] = record.ctx.upstream_seconds
    record.usage = result.usage
    await gateway.finish(request, record)
    return result


class StreamWriter(Protocol):
    """Turns neutral events into one surface's stream bytes (`ChunkWriter` is the OpenAI one)."""

    usage: Usage | None

    def start(self) -> bytes: ...

    def event(self, event: StreamEvent) -> bytes | None: ...

    def end(self) -> bytes: ...

    def error(self, error: ApiError) -> bytes: ...


async def open_stream(
    target: ChatTarget, chat: ChatRequest, ctx: CallContext
) -> tuple[AsyncIterator[StreamEvent], StreamEvent | None]:
    """Start a stream and wait for its first event, so that an upstream failure before
    any output becomes a proper HTTP error instead of a broken stream."""
    events = target.stream(chat, ctx)
    try:
        first = await events.__anext__()
    except StopAsyncIteration:
        return events, None
    except BaseException:
        await aclose(events)
        raise
    return events, first


async def stream_chat(
    gateway: Gateway,
    request: Request,
    target: ChatTarget,
    chat: ChatRequest,
    record: CallRecord,
    writer: StreamWriter,
    to_api_error: Callable[[ProviderError], ApiError] = ApiError.from_provider,
) -> Response:
    ctx = record.ctx
    ahead = ReadAhead()
    READ_AHEAD.set(ahead)  # this request's task: the provider's SSE reader says when more events are in memory
    try:
        events, first = await open_stream(target, chat, ctx)
    except ProviderError as exc:
        record.status, record.error = exc.status, exc
        await gateway.finish(request, record)
        raise to_api_error(exc) from None
    finally:
        request.scope["state"]["upstream_seconds"] = ctx.upstream_seconds
    record.ttft_seconds = time.perf_counter() - record.started

    async def body() -> AsyncIterator[bytes]:
        try:
            yield writer.start()
            if first is not None:
                chunk = writer.event(first)
                if chunk:
                    yield chunk
            async for event in events:
                chunk = writer.event(event)
                if chunk:
                    yield chunk
            yield writer.end()
        except ProviderError as exc:
            record.status, record.error = exc.status, exc
            yield writer.error(to_api_error(exc))
        except BaseException as exc:  # client went away (cancelled) or a bug: still record it
            record.status, record.error = 499, exc
            raise
        finally:
            record.usage = writer.usage
            # The upstream stream must be closed and the usage recorded whatever happens:
            # from here the response no longer cancels us when the client leaves, and
            # when we are unwinding a cancellation already, the rest is shielded.
            ahead.settling = True
            task = asyncio.current_task()
            unwinding = task is not None and task.cancelling() > 0
            with anyio.CancelScope(shield=True) if unwinding else contextlib.nullcontext():
                await aclose(events)
                await gateway.finish(request, record)

    return EventStreamResponse(body(), headers=SSE_HEADERS, ahead=ahead)
