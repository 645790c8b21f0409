"""Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer streams and add latency).

`CorralMiddleware` does three things every request needs:
- a request id (`x-request-id`, taken from the client if it sent one),
- the body size limit (413 in the surface's error format), without reading a body
  that announces its size,
- the `x-corral-overhead-ms` header: time spent in Corral before the response starts,
  minus the time the route reports it spent waiting upstream.
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.gateway.call import EXCHANGE, Call, Exchange
from corral.gateway.errors import ApiError, error_response, surface_for_path
from corral.ids import new_id
from corral.telemetry.logging import REQUEST_ID

ResponseStarted = Callable[[Call, int, float], None]  # the model call, its status, Corral's overhead


class CorralMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, on_response_start: ResponseStarted | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.on_response_start = on_response_start

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        length: bytes | None = None
        client_id: bytes | None = None
        encoding: bytes | None = None
        for key, value in scope["headers"]:  # one pass for the headers read here
            if key == b"content-length":
                length = value
            elif key == b"x-request-id":
                client_id = value
            elif key == b"content-encoding":
                encoding = value.strip().lower()
        request_id = _safe_request_id(client_id) or new_id()
        exchange = scope[EXCHANGE] = Exchange(request_id, started)
        REQUEST_ID.set(request_id)  # every log line of this request carries it

        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await self._too_large(scope, receive, send)
            return
        if encoding is not None and encoding != b"identity":
            decoded = await self._decoded(scope, receive, send, encoding)
            if decoded is None:
                return
            receive = decoded
        elif length is None and scope["method"] in ("POST", "PUT", "PATCH"):
            buffered = await self._buffered(scope, receive, send)
            if buffered is None:
                return
            receive = buffered
        id_value = request_id.encode()
        extra = [(b"x-request-id", id_value)]
        if scope["path"].startswith("/v1/messages"):  # Anthropic's API and SDKs name it `request-id`
            extra.append((b"request-id", id_value))
        observe = self.on_response_start

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                overhead = max(time.perf_counter() - started - exchange.upstream_seconds, 0.0)
                if observe is not None and exchange.call is not None:
                    observe(exchange.call, message["status"], overhead)
                message["headers"] = [*message.get("headers", ()),
                                      (b"x-corral-overhead-ms", b"%.3f" % (overhead * 1000)), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _buffered(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Chunked bodies (no content-length): read up to the limit, then replay."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_body_bytes:
                await self._too_large(scope, None, send)
                return None
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return replay

    async def _decoded(self, scope: Scope, receive: Receive, send: Send, encoding: bytes) -> Receive | None:
        """A compressed body (``content-encoding: gzip`` or ``deflate``): read, decompressed
        up to the body limit (a small body that inflates past it is refused like a large
        one), then replayed as a plain body; any other encoding is refused with 415."""
        if encoding not in (b"gzip", b"deflate"):
            error = ApiError(415, f"Unsupported content-encoding {encoding.decode('latin-1')!r}: send gzip, "
                             "deflate or an uncompressed body", code="unsupported_content_encoding")
            await error_response(error, surface_for_path(scope["path"]))(scope, receive, send)
            return None
        raw = await self._buffered(scope, receive, send)
        if raw is None:
            return None
        compressed = (await raw())["body"]
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 32 if encoding == b"gzip" else zlib.MAX_WBITS)
        try:
            body = inflater.decompress(compressed, self.max_body_bytes + 1)
        except zlib.error as exc:
            error = ApiError(400, f"The request body is not valid {encoding.decode()} data: {exc}", code="invalid_body")
            await error_response(error, surface_for_path(scope["path"]))(scope, _no_body, send)
            return None
        if len(body) > self.max_body_bytes or inflater.unconsumed_tail:
            await self._too_large(scope, None, send)
            return None
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k not in (b"content-encoding", b"content-length")]
        scope["headers"].append((b"content-length", b"%d" % len(body)))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    async def _too_large(self, scope: Scope, receive: Receive | None, send: Send) -> None:
        error = ApiError(413, f"Request body is larger than the limit of {self.max_body_bytes} bytes",
                         code="request_too_large")
        response = error_response(error, surface_for_path(scope["path"]))
        response.headers["connection"] = "close"
        await response(scope, receive or _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


_SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def _safe_request_id(value: bytes | None) -> str | None:
    """The client's `x-request-id`, if it is a plain token: it is echoed into logs and
    headers, so anything else (control characters, huge values) is replaced."""
    return value.decode("ascii") if value is not None and _SAFE_REQUEST_ID.fullmatch(value) else None
