"""Corral's HTTP/1.1 wire under httpx (`corral.llm.providers._wire.FastTransport`),
against real loopback servers that answer in every way an upstream can: framed by
content-length, chunked or the end of the connection; compressed; cut short; garbage;
slow; closing a kept-alive connection; over TLS."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import trustme

from corral.config.schema import ProviderConfig
from corral.llm import errors
from corral.llm.providers._http import HttpClient
from corral.llm.providers._wire import FastTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Upstream:
    """A loopback server; `handler(reader, writer, n)` answers the n-th connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.closed_by_client = 0
        self.port = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self.connections)
            if await reader.read(1) == b"":
                self.closed_by_client += 1
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> Upstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request: its head and its body (content-length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next((int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length:")), None)
    if length is not None:
        return head, await reader.readexactly(length)
    body = b""
    if b"transfer-encoding: chunked" in lines:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            body += (await reader.readexactly(size + 2))[:-2]
            if size == 0:
                return head, body
    return head, body


def answer(body: bytes, *extra: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + b"".join(h + b"\r\n" for h in extra) \
        + b"content-length: %d\r\n\r\n" % len(body) + body


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
    while True:
        try:
            _, body = await read_request(reader)
        except asyncio.IncompleteReadError:
            return
        writer.write(answer(b'{"echo": %d}' % len(body)))
        await writer.drain()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Upstream]]]:
    started: list[Upstream] = []

    async def start(handler: Handler) -> Upstream:
        upstream = await Upstream(handler).start()
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        await upstream.stop()


def client(port: int, *, scheme: str = "http", **limits: int | float | None) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"{scheme}://127.0.0.1:{port}", timeout=5,
                             transport=FastTransport(httpx.Limits(**{"max_connections": 10, **limits})))


async def test_keep_alive_requests_share_one_connection(serve) -> None:
    upstream = await serve(keep_alive)
    async with client(upstream.port) as http:
        for size in (0, 10, 100_000):
            response = await http.post("/x", content=b"a" * size)
            assert response.status_code == 200
            assert response.json() == {"echo": size}
    assert upstream.connections == 1


async def test_chunked_and_close_delimited_bodies(serve) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        if n == 1:  # chunked, split across writes, then a second request on the same connection
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(b"6\r\n world\r\n0\r\n\r\n")
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
            await writer.drain()
            writer.close()
        else:
            writer.write(answer(b"{}"))

    upstream = await serve(handler)
    async with client(upstream.port) as http:
        assert (await http.get("/")).content == b"hello world"
        assert (await http.get("/")).content == b"until the end"
        assert (await http.get("/")).content == b"{}"
    assert upstream.connections == 2  # the close-delimited answer ended its connection


async def test_gzip_is_decoded_by_httpx(serve) -> None:
    payload = b'{"text": "' + b"z" * 5000 + b'"}'

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(answer(gzip.compress(payload), b"content-encoding: gzip"))

    upstream = await serve(handler)
    async with client(upstream.port) as http:
        assert (await http.get("/")).content == payload


async def test_a_large_body_arrives_whole_while_the_socket_is_paused(serve) -> None:
    payload = bytes(range(256)) * 16_384  # 4 MiB: well past the read high-water mark

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(payload) + payload)
        await writer.drain()

    upstream = await serve(handler)
    async with client(upstream.port) as http, http.stream("GET", "/") as response:
        received = b""
        async for piece in response.aiter_raw():
            received += piece
            await asyncio.sleep(0)  # a slow reader: the transport must pause, not buffer it all
    assert received == payload


async def test_a_streamed_request_body_is_sent_chunked(serve) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        _, body = await read_request(reader)
        seen.append(body)
        writer.write(answer(b"{}"))

    async def parts() -> AsyncIterator[bytes]:
        for piece in (b"one ", b"two ", b"three"):
            yield piece

    upstream = await serve(handler)
    async with client(upstream.port) as http:
        assert (await http.post("/", content=parts())).status_code == 200
    assert seen == [b"one two three"]


async def test_an_idle_connection_the_server_closed_is_replaced(serve) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(answer(b"{}"))  # keep-alive by default, then closed anyway
        await writer.drain()
        writer.close()

    upstream = await serve(handler)
    transport = FastTransport(httpx.Limits(max_connections=1))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{upstream.port}", transport=transport) as http:
        for _ in range(3):
            assert (await http.get("/")).status_code == 200
            await asyncio.sleep(0.02)  # the EOF reaches the idle connection
    assert upstream.connections == 3


async def test_the_keep_alive_race_resends_once_on_a_new_connection(serve) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(answer(b'{"n": %d}' % n))
        await writer.drain()
        if n == 1:  # reads the next request, then closes without a byte: as if it timed the connection out
            await read_request(reader)
            writer.close()
            return
        await keep_alive(reader, writer, n)

    upstream = await serve(handler)
    transport = FastTransport(httpx.Limits(max_connections=1))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{upstream.port}", transport=transport) as http:
        assert (await http.get("/")).json() == {"n": 1}
        assert (await http.get("/")).json() == {"n": 2}  # resent on connection 2, invisibly
        assert (await http.get("/")).json() == {"echo": 0}  # connection 2, pooled, answers again
        assert transport.open_connections() == transport.idle_connections() == 1  # the slot counted once
    assert upstream.connections == 2


async def test_a_new_connection_closed_before_answering_is_an_error(serve) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.close()

    upstream = await serve(handler)
    async with client(upstream.port) as http:
        with pytest.raises(httpx.RemoteProtocolError, match="before answering"):
            await http.get("/")
    assert upstream.connections == 1  # not resent: it was not a reused connection


@pytest.mark.parametrize(("wire", "error", "text"), [
    (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten..", httpx.RemoteProtocolError, "mid-response"),
    (b"SMTP ready\r\n\r\n", httpx.RemoteProtocolError, "malformed HTTP response"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", httpx.RemoteProtocolError, "malformed"),
])
async def test_broken_answers_raise_typed_errors(serve, wire: bytes, error: type[Exception], text: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(wire)
        await writer.drain()
        writer.close()

    upstream = await serve(handler)
    async with client(upstream.port) as http:
        with pytest.raises(error, match=text):
            await http.get("/")


async def test_timeouts_and_refused_connections_are_typed(serve) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    upstream = await serve(silent)
    async with client(upstream.port) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get("/", timeout=0.2)
    port = upstream.port
    await upstream.stop()
    await asyncio.sleep(0.05)
    async with client(port) as http:
        with pytest.raises(httpx.ConnectError, match="cannot connect"):
            await http.get("/")


async def test_the_pool_bounds_connections_and_waiting_for_one(serve) -> None:
    gate = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            await read_request(reader)
            await gate.wait()
            writer.write(answer(b"{}"))
            await writer.drain()

    upstream = await serve(handler)
    async with client(upstream.port, max_connections=1) as http:
        first = asyncio.create_task(http.get("/"))
        await asyncio.sleep(0.05)
        with pytest.raises(httpx.PoolTimeout):
            await http.get("/", timeout=httpx.Timeout(5, pool=0.1))
        second = asyncio.create_task(http.get("/"))  # waits for the first's connection
        await asyncio.sleep(0.05)
        gate.set()
        assert (await first).status_code == 200 and (await second).status_code == 200
    assert upstream.connections == 1


async def test_closing_a_stream_early_or_cancelling_frees_the_connection(serve) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        event = b'data: {"a":1}\n\n'
        for _ in range(50):
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await asyncio.sleep(0.01)

    upstream = await serve(handler)
    transport = FastTransport(httpx.Limits(max_connections=1))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{upstream.port}", transport=transport) as http:
        async with http.stream("GET", "/") as response:
            async for _ in response.aiter_raw():
                break  # leaves the body unread: the connection must close, not go back to the pool
        task = asyncio.create_task(http.get("/"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with http.stream("GET", "/") as response:  # only possible if both freed their slot
            assert response.status_code == 200
        await asyncio.sleep(0.05)
    assert upstream.connections == 3
    assert transport.idle_connections() == 0


async def test_tls_with_a_verified_certificate() -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    upstream = await Upstream(keep_alive).start(server_context)
    try:
        transport = FastTransport(httpx.Limits(max_connections=4), ssl_context=client_context)
        async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{upstream.port}", transport=transport) as http:
            assert (await http.post("/", content=b"abc")).json() == {"echo": 3}
            assert (await http.post("/", content=b"abcd")).json() == {"echo": 4}
        async with client(upstream.port, scheme="https") as http:  # the system's trust store: not this CA
            with pytest.raises(httpx.ConnectError, match="TLS handshake"):
                await http.get("/")
    finally:
        await upstream.stop()
    assert upstream.connections == 1  # both requests on one connection (the failed handshake never got one)


async def test_the_provider_client_maps_wire_failures(serve) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"cut")
        await writer.drain()
        writer.close()

    upstream = await serve(handler)
    http = HttpClient("up", ProviderConfig(type="openai", api_key="sk-secret"),
                      base_url=f"http://127.0.0.1:{upstream.port}", headers={}, api_key="sk-secret")
    try:
        with pytest.raises(errors.UpstreamUnavailableError, match="closed the connection mid-response") as caught:
            await http.request_json("POST", "/v1/chat/completions", json_body={})
        assert "sk-secret" not in str(caught.value)
    finally:
        await http.aclose()


def test_a_proxy_in_the_environment_selects_httpx_own_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    from corral.llm.providers import _http

    config = ProviderConfig(type="openai", api_key="k")
    assert isinstance(_http._default_transport(config), FastTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    assert _http._default_transport(config) is None


def test_the_wire_on_uvloop() -> None:
    """`corral serve` runs on uvloop (whose transports are not asyncio's classes)."""
    import uvloop

    async def scenario() -> tuple[list[int], int]:
        upstream = await Upstream(keep_alive).start()
        try:
            async with client(upstream.port) as http:
                echoes = [(await http.post("/", content=b"x" * n)).json()["echo"] for n in (1, 2, 3)]
        finally:
            await upstream.stop()
        return echoes, upstream.connections

    assert uvloop.run(scenario()) == ([1, 2, 3], 1)


async def test_the_provider_client_sends_the_head_httpx_would_with_its_body(serve) -> None:
    """The provider client encodes its request head once per path and sends it straight
    down the wire: the upstream must see what an `httpx.Request` would have carried."""
    seen: list[tuple[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            try:
                seen.append(await read_request(reader))
            except asyncio.IncompleteReadError:
                return
            writer.write(answer(b'{"ok": true}'))
            await writer.drain()

    upstream = await serve(handler)
    config = ProviderConfig(type="openai", api_key="sk-secret", headers={"x-team": "blue"})
    http = HttpClient("up", config, base_url=f"http://127.0.0.1:{upstream.port}/v1",
                      headers={"authorization": "Bearer sk-secret"}, api_key="sk-secret", params={"api-version": "7"})
    expected = httpx.Request("POST", f"http://127.0.0.1:{upstream.port}/v1/chat/completions?api-version=7",
                             headers={**http._client.headers, "content-type": "application/json"},
                             content=b'{"model":"m","n":1}')
    try:
        for n in (1, 2):  # the second from the cached head, with its own length
            assert await http.request_json("POST", "/chat/completions", json_body={"model": "m", "n": n}) == {"ok": True}
        assert await http.request_json("GET", "/models") == {"ok": True}
    finally:
        await http.aclose()

    def headers(head: bytes) -> dict[bytes, bytes]:
        lines = head.split(b"\r\n")[1:]
        return {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines if line)}

    (first, body1), (second, body2), (listing, body3) = seen
    assert first.split(b"\r\n")[0] == b"POST /v1/chat/completions?api-version=7 HTTP/1.1"
    assert headers(first) == {k.lower(): v for k, v in expected.headers.raw}
    assert (body1, body2, body3) == (b'{"model":"m","n":1}', b'{"model":"m","n":2}', b"")
    assert headers(second)[b"content-length"] == b"19"
    assert listing.split(b"\r\n")[0] == b"GET /v1/models?api-version=7 HTTP/1.1"
    assert headers(listing)[b"authorization"] == b"Bearer sk-secret" and headers(listing)[b"x-team"] == b"blue"
    assert b"content-length" not in headers(listing) and b"content-type" not in headers(listing)
    assert upstream.connections == 1


async def test_the_provider_client_decodes_an_encoded_body_and_passes_a_plain_one(serve) -> None:
    """The wire tells the provider client whether a content-encoding came (an extension,
    not a header lookup): an encoded body goes through httpx's decoder, a plain one not."""
    payload = b'{"text": "' + b"z" * 5000 + b'"}'

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(answer(gzip.compress(payload), b"Content-Encoding: gzip"))
        await read_request(reader)
        writer.write(answer(payload))
        await writer.drain()

    upstream = await serve(handler)
    http = HttpClient("up", ProviderConfig(type="openai"), base_url=f"http://127.0.0.1:{upstream.port}",
                      headers={}, api_key=None)
    try:
        sent = await http._send("GET", "/", None, None, None)
        assert sent.extensions["corral_encoded"] is True
        assert await http._read(sent) == payload
        assert await http.request_json("GET", "/") == {"text": "z" * 5000}
    finally:
        await http.aclose()


async def test_the_provider_client_reads_a_body_that_arrives_after_its_headers(serve) -> None:
    """A body already in with its headers is taken whole; one still on its way is read
    as it comes; both leave the connection reusable."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{\"a\": ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"12345}")
        await read_request(reader)
        writer.write(answer(b'{"b": 2}'))
        await writer.drain()
        await reader.read(1)

    upstream = await serve(handler)
    http = HttpClient("up", ProviderConfig(type="openai"), base_url=f"http://127.0.0.1:{upstream.port}",
                      headers={}, api_key=None)
    try:
        assert await http.request_json("POST", "/x", json_body={}) == {"a": 12345}
        assert await http.request_json("POST", "/x", json_body={}) == {"b": 2}
        assert upstream.connections == 1
    finally:
        await http.aclose()
