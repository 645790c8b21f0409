"""The Python floor: a bare pass-through proxy on Corral's own server stack
(Starlette + uvicorn + httpx over Corral's upstream wire, `FastTransport`) with no
features at all. It forwards the path, the
body and the content type, and streams the answer back as it arrives.

`python -m bench.passthrough --port P --upstream http://127.0.0.1:U`
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from corral.llm.providers._wire import FastTransport


def create_app(upstream: str) -> Starlette:
    # Called the way Corral's provider client calls it: an httpx.Request straight to the transport.
    transport = FastTransport(httpx.Limits(max_connections=100, max_keepalive_connections=100))
    base = upstream.rstrip("/")
    timeout = httpx.Timeout(60).as_dict()

    async def proxy(request: Request) -> Response:
        body = await request.body()
        outgoing = httpx.Request(request.method, base + request.url.path, content=body,
                                 headers={"content-type": request.headers.get("content-type", "")},
                                 extensions={"timeout": timeout})
        answer = await transport.handle_async_request(outgoing)
        content_type = answer.headers.get("content-type", "")
        if content_type.startswith("text/event-stream"):
            return StreamingResponse(answer.aiter_raw(), status_code=answer.status_code, media_type=content_type,
                                     background=BackgroundTask(answer.aclose))
        raw = await answer.aread()
        await answer.aclose()
        return Response(raw, status_code=answer.status_code, media_type=content_type)

    async def health(_: Request) -> Response:
        return Response(b"ok")

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await transport.aclose()

    return Starlette(routes=[Route("/health", health), Route("/{path:path}", proxy, methods=["POST"])],
                     lifespan=lifespan)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Bare pass-through proxy (the benchmark's Python floor).")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    # The same uvicorn settings `corral serve` uses (auto loop/http: uvloop + httptools when installed).
    uvicorn.run(create_app(args.upstream), host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False, lifespan="on")


if __name__ == "__main__":
    main()
