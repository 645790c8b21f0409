"""The Python floor: a bare pass-through proxy on Corral's own server stack
(Starlette + uvicorn, Corral's upstream wire `Wire` called with a pre-encoded
request head, Corral's `EventStreamResponse` for streams) with no features at all. It forwards the path, the
body and the content type, and streams the answer back as it arrives.

`--style httpx` serves the same proxy written the way the stack's documentation shows
it (an `httpx.AsyncClient` and Starlette's `StreamingResponse`): the benchmark's
second reference, `httpx-proxy`, for scale only.

`--style aiohttp` is the bare Starlette + aiohttp pass-through (`aiohttp-proxy`): one
`aiohttp.ClientSession`, bodies read whole, streams relayed chunk by chunk through
Starlette's `StreamingResponse`. The reference the default-config target is stated
against (issue: Corral at defaults >= 0.7x of it).

`python -m bench.passthrough --port P --upstream http://127.0.0.1:U [--style tight|httpx|aiohttp]`
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from corral.gateway.http import read_body
from corral.gateway.streaming import EventStreamResponse
from corral.llm.providers._wire import Origin, Timeouts, Wire, WireResponse, origin_of


async def _relay(answer: WireResponse) -> AsyncIterator[bytes]:
    try:
        async for raw in answer.body:
            yield raw
    finally:
        await answer.aclose()


def _proxy_app(proxy: Callable[[Request], Awaitable[Response]], close: Callable[[], Awaitable[None]]) -> Starlette:
    """Either proxy on Starlette: `/health`, every POST path to `proxy`, `close` at shutdown."""

    async def health(_: Request) -> Response:
        return Response(b"ok")

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await close()

    return Starlette(routes=[Route("/health", health), Route("/{path:path}", proxy, methods=["POST"])],
                     lifespan=lifespan)


def create_app(upstream: str) -> Starlette:
    # Called the way Corral's provider client calls it: a request head encoded once per
    # path, then the body, straight to the transport; streams answered with Corral's own
    # `EventStreamResponse` (one plain asyncio task, no anyio task group).
    wire = Wire(max_connections=100)
    base = upstream.rstrip("/")
    timeouts = Timeouts(60, 60, 60, 60)
    heads: dict[tuple[str, str, str], tuple[Origin, bytes]] = {}

    def head_for(method: str, path: str, content_type: str) -> tuple[Origin, bytes]:
        key = (method, path, content_type)
        if key not in heads:
            url = httpx.URL(base + path)
            heads[key] = (origin_of(url), b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: "
                          % (method.encode(), url.raw_path, url.netloc, content_type.encode("latin-1")))
        return heads[key]

    async def proxy(request: Request) -> Response:
        body = await read_body(request)
        content_type = next((v.decode("latin-1") for k, v in request.scope["headers"] if k == b"content-type"), "")
        origin, head = head_for(request.method, request.scope["path"], content_type)
        answer = await wire.send(origin, head + b"%d\r\n\r\n" % len(body), body, timeouts)
        answer_type = (answer.header(b"content-type") or b"").decode("latin-1")
        if answer_type.startswith("text/event-stream"):
            return EventStreamResponse(_relay(answer), status_code=answer.status)
        whole = answer.body.take_all()  # all in already, as Corral reads it
        if whole is None:
            whole = b"".join([part async for part in answer.body])
        await answer.aclose()
        return Response(whole, status_code=answer.status, media_type=answer_type)

    return _proxy_app(proxy, wire.aclose)


def create_httpx_app(upstream: str) -> Starlette:
    """The idiomatic pass-through: one `httpx.AsyncClient`, a request built per call,
    streams relayed with `StreamingResponse` and closed by a background task."""
    client = httpx.AsyncClient(base_url=upstream.rstrip("/"), timeout=60,
                               limits=httpx.Limits(max_connections=100, max_keepalive_connections=100))

    async def proxy(request: Request) -> Response:
        outgoing = client.build_request(request.method, request.url.path, content=await request.body(),
                                        headers={"content-type": request.headers.get("content-type", "")})
        answer = await client.send(outgoing, stream=True)
        content_type = answer.headers.get("content-type", "")
        if content_type.startswith("text/event-stream"):
            return StreamingResponse(answer.aiter_raw(), status_code=answer.status_code, media_type=content_type,
                                     background=BackgroundTask(answer.aclose))
        raw = await answer.aread()
        await answer.aclose()
        return Response(raw, status_code=answer.status_code, media_type=content_type)

    return _proxy_app(proxy, client.aclose)


def create_aiohttp_app(upstream: str) -> Starlette:
    """A bare pass-through with aiohttp's client (the `bench` extra installs aiohttp): the
    upstream URL parsed once per path, the body read whole, the answer read whole or
    relayed chunk by chunk through Starlette's `StreamingResponse`."""
    import aiohttp
    from yarl import URL

    base = upstream.rstrip("/")
    urls: dict[str, URL] = {}
    sessions: list[aiohttp.ClientSession] = []  # made on the server's loop, at the first request

    def session() -> aiohttp.ClientSession:
        if not sessions:
            sessions.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100),
                                                  timeout=aiohttp.ClientTimeout(total=60)))
        return sessions[0]

    async def relay(answer: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        try:
            async for chunk in answer.content.iter_any():
                yield chunk
        finally:
            answer.release()

    async def proxy(request: Request) -> Response:
        path = request.scope["path"]
        url = urls.get(path)
        if url is None:
            url = urls[path] = URL(base + path)
        answer = await session().request(request.method, url, data=await request.body(),
                                         headers={"content-type": request.headers.get("content-type", "")})
        content_type = answer.headers.get("content-type", "")
        if content_type.startswith("text/event-stream"):
            return StreamingResponse(relay(answer), status_code=answer.status, media_type=content_type)
        raw = await answer.read()
        answer.release()
        return Response(raw, status_code=answer.status, media_type=content_type)

    async def close() -> None:
        if sessions:
            await sessions[0].close()

    return _proxy_app(proxy, close)


STYLES = {"tight": create_app, "httpx": create_httpx_app, "aiohttp": create_aiohttp_app}


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Bare pass-through proxy (the benchmark's Python floor).")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--style", choices=sorted(STYLES), default="tight")
    args = parser.parse_args()
    app = STYLES[args.style](args.upstream)
    # The same uvicorn settings `corral serve` uses (auto loop/http: uvloop + httptools when installed).
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False, lifespan="on")


if __name__ == "__main__":
    main()
