"""Corral's upstream wire (`corral.llm.providers._wire.Wire`, called by the provider
client `HttpClient`, the only send path), against real loopback servers that answer in
every way an upstream can: framed by content-length, chunked or the end of the
connection; compressed; cut short; garbage; slow; closing a kept-alive connection; over
TLS; through a proxy."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import trustme
from tests.llm.loopback import Handler, Upstream, answer, keep_alive, read_request

from corral.config.schema import ProviderConfig
from corral.llm import errors
from corral.llm.providers._http import HttpClient
from corral.llm.providers._wire import Network, Origin, Timeouts, TlsTrust, Wire


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


def client(port: int, *, scheme: str = "http", network: Network | None = None, **config: Any) -> HttpClient:
    settings = {"type": "openai", "timeout": 5, "max_connections": 10, **config}
    return HttpClient("up", ProviderConfig(**settings), base_url=f"{scheme}://127.0.0.1:{port}", headers={},
                      api_key=None, network=network)


async def test_keep_alive_requests_share_one_connection(serve) -> None:
    upstream = await serve(keep_alive)
    http = client(upstream.port)
    try:
        for size in (0, 10, 100_000):
            body = {"a": "x" * size}
            assert await http.request_json("POST", "/x", json_body=body) == {"echo": len(orjson.dumps(body))}
    finally:
        await http.aclose()
    assert upstream.connections == 1


async def test_chunked_and_close_delimited_bodies(serve) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        if n == 1:  # chunked, split across writes, then a second request on the same connection
            writer.write(b'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n7\r\n{"a": "\r\n')
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(b'd\r\nhello world"}\r\n0\r\n\r\n')
            await read_request(reader)
            writer.write(b'HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{"until": "the end"}')
            await writer.drain()
            writer.close()
        else:
            writer.write(answer(b"{}"))

    upstream = await serve(handler)
    http = client(upstream.port)
    try:
        assert await http.request_json("GET", "/") == {"a": "hello world"}
        assert await http.request_json("GET", "/") == {"until": "the end"}
        assert await http.request_json("GET", "/") == {}
    finally:
        await http.aclose()
    assert upstream.connections == 2  # the close-delimited answer ended its connection


async def test_a_large_body_arrives_whole_while_the_socket_is_paused(serve) -> None:
    payload = bytes(range(256)) * 16_384  # 4 MiB: well past the read high-water mark

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(payload) + payload)
        await writer.drain()

    upstream = await serve(handler)
    http = client(upstream.port)
    try:
        received = b""
        async with http.open("GET", "/") as response:
            async for piece in response.body:
                received += piece
                await asyncio.sleep(0)  # a slow reader: the wire must pause the socket, not buffer it all
    finally:
        await http.aclose()
    assert received == payload


async def test_an_idle_connection_the_server_closed_is_replaced(serve) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(answer(b"{}"))  # keep-alive by default, then closed anyway
        await writer.drain()
        writer.close()

    upstream = await serve(handler)
    http = client(upstream.port, max_connections=1)
    try:
        for _ in range(3):
            assert await http.request_json("GET", "/") == {}
            await asyncio.sleep(0.02)  # the EOF reaches the idle connection
    finally:
        await http.aclose()
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
    http = client(upstream.port, max_connections=1)
    try:
        assert await http.request_json("GET", "/") == {"n": 1}
        assert await http.request_json("GET", "/") == {"n": 2}  # resent on connection 2, invisibly
        assert await http.request_json("GET", "/") == {"echo": 0}  # connection 2, pooled, answers again
        assert http.wire.open_connections() == http.wire.idle_connections() == 1  # the slot counted once
    finally:
        await http.aclose()
    assert upstream.connections == 2


async def test_a_new_connection_closed_before_answering_is_an_error(serve) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.close()

    upstream = await serve(handler)
    http = client(upstream.port)
    try:
        with pytest.raises(errors.UpstreamUnavailableError, match="before answering"):
            await http.request_json("GET", "/")
    finally:
        await http.aclose()
    assert upstream.connections == 1  # not resent: it was not a reused connection


@pytest.mark.parametrize(("wire", "text"), [
    (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten..", "mid-response"),
    (b"SMTP ready\r\n\r\n", "malformed HTTP response"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", "malformed"),
])
async def test_broken_answers_raise_typed_errors(serve, wire: bytes, text: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(wire)
        await writer.drain()
        writer.close()

    upstream = await serve(handler)
    http = client(upstream.port)
    try:
        with pytest.raises(errors.UpstreamUnavailableError, match=text):
            await http.request_json("GET", "/")
    finally:
        await http.aclose()


async def test_timeouts_and_refused_connections_are_typed(serve) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    upstream = await serve(silent)
    http = client(upstream.port, timeout=0.2)  # the read timeout, not a deadline on the call
    try:
        with pytest.raises(errors.UpstreamTimeout, match="ReadTimeout"):
            await http.request_json("GET", "/")
    finally:
        await http.aclose()
    port = upstream.port
    await upstream.stop()
    await asyncio.sleep(0.05)
    http = client(port)
    try:
        with pytest.raises(errors.UpstreamUnavailableError, match="cannot connect"):
            await http.request_json("GET", "/")
    finally:
        await http.aclose()


def get(port: int) -> tuple[Origin, bytes]:
    return Origin(b"http", b"127.0.0.1", port), b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port


async def test_the_pool_bounds_connections_and_waiting_for_one(serve) -> None:
    gate = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            await read_request(reader)
            await gate.wait()
            writer.write(answer(b"{}"))
            await writer.drain()

    upstream = await serve(handler)
    wire = Wire(max_connections=1)
    origin, head = get(upstream.port)
    patient, hasty = Timeouts(5, 5, 5, 5), Timeouts(5, 5, 5, pool=0.1)

    async def fetch(timeouts: Timeouts) -> bytes:
        response = await wire.send(origin, head, b"", timeouts)
        return b"".join([part async for part in response.body])

    try:
        first = asyncio.create_task(fetch(patient))
        await asyncio.sleep(0.05)
        with pytest.raises(Exception, match="free upstream connection") as caught:
            await fetch(hasty)
        assert type(caught.value).__name__ == "PoolTimeout"
        second = asyncio.create_task(fetch(patient))  # waits for the first's connection
        await asyncio.sleep(0.05)
        gate.set()
        assert (await first, await second) == (b"{}", b"{}")
    finally:
        await wire.aclose()
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
    http = client(upstream.port, max_connections=1)
    try:
        async with http.open("POST", "/", json_body={}) as response:
            async for _ in http.sse(response):
                break  # leaves the body unread: the connection must close, not go back to the pool
        task = asyncio.create_task(http.request_json("POST", "/", json_body={}))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with http.open("POST", "/", json_body={}) as response:  # only possible if both freed their slot
            assert response.status == 200
        await asyncio.sleep(0.05)
        assert http.wire.idle_connections() == 0
    finally:
        await http.aclose()
    assert upstream.connections == 3


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def trust(authority: trustme.CA, tmp_path: Path) -> TlsTrust:
    """Trust in the test authority, as ``SSL_CERT_FILE`` gives it."""
    path = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return TlsTrust.from_env({"SSL_CERT_FILE": str(path)})


def tls_server_context(authority: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(*names).configure_cert(context)
    return context


async def test_tls_with_a_verified_certificate(authority: trustme.CA, trust: TlsTrust) -> None:
    upstream = await Upstream(keep_alive).start(tls_server_context(authority, "127.0.0.1"))
    try:
        http = client(upstream.port, scheme="https", network=Network(trust=trust))
        try:
            assert await http.request_json("POST", "/", json_body="abc") == {"echo": 5}
            assert await http.request_json("POST", "/", json_body="abcd") == {"echo": 6}
        finally:
            await http.aclose()
        http = client(upstream.port, scheme="https")  # certifi's authorities: not this one
        try:
            with pytest.raises(errors.UpstreamUnavailableError, match="TLS handshake"):
                await http.request_json("GET", "/")
        finally:
            await http.aclose()
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


def test_the_wire_on_uvloop() -> None:
    """`corral serve` runs on uvloop (whose transports are not asyncio's classes)."""
    import uvloop

    async def scenario() -> tuple[list[int], int]:
        upstream = await Upstream(keep_alive).start()
        http = client(upstream.port)
        try:
            echoes = [(await http.request_json("POST", "/", json_body="x" * n))["echo"] for n in (1, 2, 3)]
        finally:
            await http.aclose()
            await upstream.stop()
        return echoes, upstream.connections

    assert uvloop.run(scenario()) == ([3, 4, 5], 1)


async def test_the_provider_client_sends_its_head_with_its_body(serve) -> None:
    """The provider client encodes its request head once per path and sends it straight
    down the wire: the request line, Host, the client's and the config's headers, the
    JSON content type and the body's length."""
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
    try:
        for n in (1, 2):  # the second from the cached head, with its own length
            assert await http.request_json("POST", "/chat/completions", json_body={"model": "m", "n": n}) == {"ok": True}
        assert await http.request_json("GET", "/models") == {"ok": True}
    finally:
        await http.aclose()

    def headers(head: bytes) -> dict[bytes, bytes]:
        lines = head.split(b"\r\n")[1:]
        return {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines if line)}

    from corral import __version__

    (first, body1), (second, body2), (listing, body3) = seen
    assert first.split(b"\r\n")[0] == b"POST /v1/chat/completions?api-version=7 HTTP/1.1"
    assert headers(first) == {
        b"host": b"127.0.0.1:%d" % upstream.port, b"accept": b"*/*", b"accept-encoding": b"gzip, deflate",
        b"connection": b"keep-alive", b"user-agent": b"corral/" + __version__.encode(),
        b"authorization": b"Bearer sk-secret", b"x-team": b"blue",
        b"content-type": b"application/json", b"content-length": b"19",
    }
    assert (body1, body2, body3) == (b'{"model":"m","n":1}', b'{"model":"m","n":2}', b"")
    assert headers(second)[b"content-length"] == b"19"
    assert listing.split(b"\r\n")[0] == b"GET /v1/models?api-version=7 HTTP/1.1"
    assert headers(listing)[b"authorization"] == b"Bearer sk-secret" and headers(listing)[b"x-team"] == b"blue"
    assert b"content-length" not in headers(listing) and b"content-type" not in headers(listing)
    assert upstream.connections == 1


async def test_the_provider_client_decodes_an_encoded_body_and_passes_a_plain_one(serve) -> None:
    """The wire says whether a content-encoding came (`WireResponse.encoded`, no header
    lookup): an encoded body goes through httpx's decoder, a plain one not."""
    payload = b'{"text": "' + b"z" * 5000 + b'"}'

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(answer(gzip.compress(payload), b"Content-Encoding: gzip"))
        await read_request(reader)
        writer.write(answer(payload))
        await writer.drain()

    upstream = await serve(handler)
    http = client(upstream.port)
    try:
        async with http.open("GET", "/") as sent:
            assert sent.encoded is True
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
    http = client(upstream.port)
    try:
        assert await http.request_json("POST", "/x", json_body={}) == {"a": 12345}
        assert await http.request_json("POST", "/x", json_body={}) == {"b": 2}
        assert upstream.connections == 1
    finally:
        await http.aclose()
