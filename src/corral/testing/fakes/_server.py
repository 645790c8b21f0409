"""The loopback server every fake upstream runs on: uvicorn in a background thread
with its own event loop, so one fake serves sync tests, async tests and subprocesses
(``corral serve`` pointed at ``fake.base_url``) alike."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute

from corral.testing.fakes._script import RecordedRequest, Reply

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


class DropConnection(Exception):
    """Raised inside a response stream to make the server abort the connection."""


class _HideDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DropConnection))


_HIDE_DROPS = _HideDrops()  # stateless; one instance so addFilter stays idempotent


class Frames:
    """A stream's events: ``body`` carries the content, ``final`` the events that finish it
    (left out by ``Reply.truncate``)."""

    def __init__(self, body: list[bytes], final: list[bytes]) -> None:
        self.body = body
        self.final = final


class FakeUpstream:
    """Base class: a script of replies, a record of requests, a real HTTP server.

    ``async with FakeOpenAI(Reply(text="hi")) as fake:`` or ``with FakeOpenAI() as fake:``;
    then point a client at ``fake.base_url``. ``fake.add(...)`` queues more replies;
    once the queue is empty, ``default`` answers (an echo unless given).
    """

    prefix = ""  # the path part of base_url, e.g. "/v1"
    default_models: Sequence[str] = ()

    def __init__(
        self,
        *replies: Reply,
        default: Reply | None = None,
        api_key: str | None = None,
        models: Sequence[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Reply] = deque(replies)
        self.default = default or Reply()
        self.api_key = api_key
        self.models = list(models if models is not None else self.default_models)
        self.requests: list[RecordedRequest] = []
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    # ---- script and record ------------------------------------------------------

    def add(self, *replies: Reply) -> Self:
        with self._lock:
            self._queue.extend(replies)
        return self

    def reset(self) -> None:
        """Forgets queued replies and recorded requests (to reuse one server across tests)."""
        with self._lock:
            self._queue.clear()
            self.requests.clear()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def next_reply(self) -> Reply:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    def next_id(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            if not self.requests:
                raise AssertionError(f"{type(self).__name__} has received no request")
            return self.requests[-1]

    def record(self, request: Request, body: Any) -> RecordedRequest:
        recorded = RecordedRequest(
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            client_port=request.client.port if request.client else None,
        )
        with self._lock:
            self.requests.append(recorded)
        return recorded

    # ---- to be provided by each vendor ------------------------------------------

    def routes(self) -> list[BaseRoute]:
        raise NotImplementedError

    def error_body(self, status: int, message: str, error_type: str | None) -> Any:
        raise NotImplementedError

    def error_event(self, body: Any) -> bytes:
        """An error inside an event stream (OpenAI-compatible servers and Gemini send a
        ``data:`` frame holding the error object)."""
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    # ---- shared response building ------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + self.prefix

    def app(self) -> Starlette:
        return Starlette(routes=self.routes())

    def _error_payload(self, reply: Reply) -> Any:
        if reply.error_body is not None:
            return reply.error_body
        return self.error_body(reply.status, reply.error_message or default_message(reply.status), reply.error_type)

    def error_response(self, reply: Reply) -> Response:
        return JSONResponse(self._error_payload(reply), status_code=reply.status, headers=reply.headers)

    async def read_json(self, request: Request) -> tuple[Any, Response | None]:
        raw = await request.body()
        if not raw:
            return None, None
        try:
            return json.loads(raw), None
        except ValueError:
            message = "We could not parse the JSON body of your request."
            return None, JSONResponse(self.error_body(400, message, None), status_code=400)

    async def respond(
        self,
        request: Request,
        reply: Reply,
        *,
        stream: bool,
        complete: Callable[[], Any],
        frames: Callable[[], Frames],
        media_type: str = "text/event-stream",
    ) -> Response:
        """Applies the reply's failure modes around the vendor's rendering."""
        if reply.delay and await wait_for_disconnect(request, reply.delay):
            return Response(status_code=499)
        if reply.raw_body is not None:
            return Response(
                reply.raw_body, status_code=reply.status, media_type=reply.content_type, headers=reply.headers
            )
        in_stream_error = stream and reply.mid_stream_error
        if reply.status >= 400 and not in_stream_error:
            return self.error_response(reply)
        if stream:
            events = frames()
            if in_stream_error:
                events.final = [self.error_event(self._error_payload(reply))]
            return StreamingResponse(stream_frames(reply, events), media_type=media_type, headers=reply.headers)
        payload = json.dumps(complete()).encode()
        if reply.truncate or reply.drop:
            return StreamingResponse(
                cut_body(payload, drop=reply.drop), media_type="application/json", headers=reply.headers
            )
        return Response(payload, media_type="application/json", headers=reply.headers)

    # ---- lifecycle -------------------------------------------------------------

    def start(self) -> Self:
        self._begin()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._started(deadline):
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(_STOP_TIMEOUT)
        self._server, self._thread = None, None

    def _begin(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} is already running at {self.base_url}")
        logging.getLogger("uvicorn.error").addFilter(_HIDE_DROPS)
        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose
        # proto says TCP, and without it every answer waits ~40 ms for a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app(),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            timeout_keep_alive=30,
        )
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=_serve, args=(server, sock), name=f"{type(self).__name__}:{self.port}", daemon=True
        )
        self._thread.start()

    def _started(self, deadline: float) -> bool:
        assert self._server is not None and self._thread is not None
        if self._server.started:
            return True
        if not self._thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{type(self).__name__} failed to start on {self.host}:{self.port}")
        return False

    async def astart(self) -> Self:
        # Starting and stopping block on the server thread; keep the caller's loop free.
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.astop()


def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        sock.close()


async def wait_for_disconnect(request: Request, seconds: float) -> bool:
    """Sleeps ``seconds`` unless the client goes away first (then returns True), so a
    slow reply never outlives the client that gave up on it."""
    try:
        async with asyncio.timeout(seconds):
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    return True
    except TimeoutError:
        return False


async def stream_frames(reply: Reply, frames: Frames) -> AsyncIterator[bytes]:
    events: Iterable[bytes] = frames.body if (reply.truncate or reply.drop) else [*frames.body, *frames.final]
    for i, event in enumerate(events):
        if i and reply.chunk_delay:
            await asyncio.sleep(reply.chunk_delay)
        yield event
    if reply.drop:
        raise DropConnection("scripted connection drop")


async def cut_body(payload: bytes, *, drop: bool) -> AsyncIterator[bytes]:
    yield payload[: len(payload) // 2]
    if drop:
        raise DropConnection("scripted connection drop")


def default_message(status: int) -> str:
    return {
        400: "Bad request.",
        401: "Invalid API key.",
        403: "Permission denied.",
        404: "The model does not exist.",
        413: "Request too large.",
        429: "Rate limit reached. Please try again later.",
        500: "The server had an error while processing your request.",
        503: "The service is temporarily overloaded.",
        529: "Overloaded.",
    }.get(status, f"HTTP {status}")
