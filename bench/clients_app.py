"""One bare proxy per upstream client, as a raw ASGI app on uvicorn (no Starlette), for
`python -m bench clients`: what each way of calling the upstream costs per request.

`python -m bench.clients_app --client NAME --port P --upstream-port U`
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Awaitable, Callable
from typing import Any

Fetch = Callable[[str, bytes], Awaitable[tuple[int, bytes, bytes]]]  # status, content type, body
CLIENTS = ("none", "httpx", "wire", "aiohttp")


def make_fetch(name: str, upstream: str) -> Fetch:
    import httpx

    from corral.llm.providers._wire import Origin, Timeouts, Wire, origin_of

    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    headers = {"content-type": "application/json"}
    if name == "httpx":  # httpx's own client and transport (httpcore + anyio)
        client = httpx.AsyncClient(base_url=upstream, limits=limits)

        async def via_httpx(path: str, body: bytes) -> tuple[int, bytes, bytes]:
            r = await client.post(path, content=body, headers=headers)
            return r.status_code, r.headers.get("content-type", "").encode(), r.content
        return via_httpx
    if name == "wire":  # what Corral's provider client does: a head encoded once, straight to the wire
        wire = Wire(max_connections=100)
        timeouts = Timeouts(60, 60, 60, 60)
        heads: dict[str, tuple[Origin, bytes]] = {}

        async def via_wire(path: str, body: bytes) -> tuple[int, bytes, bytes]:
            if path not in heads:
                url = httpx.URL(upstream + path)
                heads[path] = (origin_of(url), b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                               b"Content-Length: " % (url.raw_path, url.netloc))
            origin, head = heads[path]
            r = await wire.send(origin, head + b"%d\r\n\r\n" % len(body), body, timeouts)
            raw = r.body.take_all()
            if raw is None:
                raw = b"".join([part async for part in r.body])
            return r.status, r.header(b"content-type") or b"", raw
        return via_wire
    if name == "aiohttp":  # optional: only when aiohttp is installed
        aiohttp: Any = importlib.import_module("aiohttp")  # not a dependency of Corral
        session: list[Any] = []

        async def via_aiohttp(path: str, body: bytes) -> tuple[int, bytes, bytes]:
            if not session:
                session.append(aiohttp.ClientSession(upstream, connector=aiohttp.TCPConnector(limit=100)))
            async with session[0].post(path, data=body, headers=headers) as r:
                return r.status, r.headers.get("content-type", "").encode(), await r.read()
        return via_aiohttp
    raise SystemExit(f"unknown client {name!r}")


def make_app(name: str, upstream: str) -> Callable[..., Awaitable[None]]:
    fetch = None if name == "none" else make_fetch(name, upstream)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if fetch is None:  # the server alone: answer without an upstream
            status, kind, raw = 200, b"application/json", b'{"ok":true}'
        else:
            status, kind, raw = await fetch(scope["path"], body)
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", kind)]})
        await send({"type": "http.response.body", "body": raw})
    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--client", choices=CLIENTS, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args()
    app = make_app(args.client, f"http://127.0.0.1:{args.upstream_port}")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, lifespan="off")


if __name__ == "__main__":
    main()
