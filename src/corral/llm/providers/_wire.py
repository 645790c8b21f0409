"""A lean HTTP/1.1 transport for httpx: keep-alive connections on asyncio protocols,
responses parsed by httptools (the C parser uvicorn uses).

Why it exists: measured on the benchmark machine, httpcore's pool and anyio's stream
layer cost about 1 ms of CPU per proxied request, several times what the whole
uvicorn server spends on the same request (docs/performance.md, "The upstream
client"). This transport does the same job for the one thing Corral's provider
adapters need, JSON and server-sent events over HTTP/1.1 with or without TLS, at a
fraction of that. httpx stays the client: URLs, headers, timeouts, content decoding,
the typed exceptions and `MockTransport` in tests are all unchanged; only the wire
below it is ours. Proxies are not spoken here: `HttpClient` uses httpx's own
transport when a proxy is configured in the environment.

What it does, and how it fails (every failure is one of httpx's typed exceptions, so
`HttpClient.transport_error` maps it):

- a pool per origin, last-in first-out, bounded by `max_connections` (waiting for a
  slot is bounded by the `pool` timeout) and `keepalive_expiry`;
- a pooled connection the server closed while idle is noticed (its protocol saw the
  EOF) and dropped; a request whose reused connection turns out to be closed before a
  single response byte arrives is sent once more on a new connection (the keep-alive
  race every HTTP/1.1 client has);
- `connect`, `read` (between any two reads) and `write` timeouts from the request;
- bodies by content-length, chunked, or until close; a response cut short raises
  `RemoteProtocolError`, garbage raises it too;
- closing a response before its end closes its connection (it cannot be reused);
  a cancelled request closes its connection.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import httptools
import httpx

_READ_HIGH_WATER = 256 * 1024  # buffered response bytes at which the socket is paused
_Origin = tuple[bytes, bytes, int]  # scheme, host, port
# The response extensions (httpx copies them): the version, and whether a content-encoding
# came (so the provider client needs no header lookup to know whether to decode).
_PLAIN = {"http_version": b"HTTP/1.1", "corral_encoded": False}
_ENCODED = {"http_version": b"HTTP/1.1", "corral_encoded": True}


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: the asyncio protocol and the httptools callbacks."""

    def __init__(self, origin: _Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.requests = 0  # responses fully read on this connection
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None
        self._reset()

    def _reset(self) -> None:
        self.active = False  # a request is in flight
        self.got_bytes = False
        self.headers_done = False
        self.complete = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.encoded = False  # a content-encoding header came
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self._paused = False
        self.delimited = False  # content-length or chunked (else: the body ends at close)
        self.keep_alive = False

    # ---- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if not self.active:  # bytes nobody asked for: the connection is unusable
            self.close()
            return
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP response from the upstream: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.active and not self.complete and self._error is None:
            if self.headers_done and not self.delimited:
                self.complete = True  # a body delimited by the end of the connection
            elif not self.got_bytes:
                self._error = _ClosedBeforeResponse("the upstream closed the connection before answering")
            else:
                self._error = httpx.RemoteProtocolError("the upstream closed the connection mid-response")
        self._wake()
        if self._write_waiter is not None and not self._write_waiter.done():
            self._write_waiter.set_exception(httpx.WriteError("the upstream closed the connection"))

    def pause_writing(self) -> None:
        if self._write_waiter is None or self._write_waiter.done():
            self._write_waiter = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._write_waiter is not None and not self._write_waiter.done():
            self._write_waiter.set_result(None)

    # ---- httptools callbacks -----------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        if len(name) == 16 and name.lower() == b"content-encoding":
            self.encoded = True

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if 100 <= self.status < 200:  # an interim answer (100 Continue): the real one follows
            self.headers = []
            self.encoded = False
            return
        self.headers_done = True
        self.keep_alive = self._parser.should_keep_alive()  # only valid until the message completes
        self.delimited = self.status in (204, 304) or any(
            name.lower() in (b"content-length", b"transfer-encoding") for name, _ in self.headers)
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _READ_HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:
            return
        self.complete = True
        self._wake()

    # ---- used by the transport ---------------------------------------------------

    def _fail(self, error: Exception) -> None:
        self._error = error
        self.close()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, seconds: float | None) -> None:
        """Waits for the next parser progress (or the end of the connection)."""
        if self._error is not None:
            raise self._error
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(seconds, _expire, waiter) if seconds is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if self._error is not None:
            raise self._error

    def take(self) -> bytes:
        data = b"".join(self.chunks) if len(self.chunks) != 1 else self.chunks[0]
        self.chunks.clear()
        self.buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    async def write(self, data: bytes, seconds: float | None) -> None:
        if self.closed or self.transport is None:
            raise _ClosedBeforeResponse("the pooled connection was closed")
        self.transport.write(data)
        waiter = self._write_waiter
        if waiter is not None and not waiter.done():
            try:
                async with asyncio.timeout(seconds):
                    await waiter
            except TimeoutError:
                self.close()
                raise httpx.WriteTimeout("timed out sending the request body") from None

    def begin(self) -> None:
        self._reset()
        self._parser = httptools.HttpResponseParser(self)
        self._error = None
        self.active = True

    def finish(self) -> bool:
        """The response was read to its end; True when the connection can be reused."""
        self.active = False
        self.requests += 1
        reusable = not self.closed and self.delimited and self.keep_alive
        if not reusable:
            self.close()
        return reusable

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _ClosedBeforeResponse(httpx.RemoteProtocolError):
    """A reused connection was found closed before any response byte: safe to resend."""


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.ReadTimeout("timed out waiting for the upstream"))


class _Body(httpx.AsyncByteStream):
    """The body of one response, read from its connection as it arrives."""

    def __init__(self, pool: FastTransport, conn: _Connection, read_timeout: float | None) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self._timeout = read_timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        while True:
            if conn.chunks:
                yield conn.take()
            elif conn.complete:
                break
            else:
                await conn.wait(self._timeout)
        self._release(reusable=conn.finish())

    def take_all(self) -> bytes | None:
        """The whole body when it has all arrived (the usual small answer, in the same
        read as its headers), the connection released; else None (read it as a stream)."""
        conn = self._conn
        if conn is None or not conn.complete:
            return None
        data = conn.take() if conn.chunks else b""
        self._release(reusable=conn.finish())
        return data

    def at_end(self) -> bool:
        """Everything of the response has arrived and been taken: reading on cannot wait."""
        conn = self._conn
        return conn is None or (conn.complete and not conn.chunks)

    async def aclose(self) -> None:
        if self._conn is not None:  # closed before its end: the connection cannot be reused
            self._conn.close()
            self._release(reusable=False)

    def _release(self, *, reusable: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn, reusable=reusable)


class FastTransport(httpx.AsyncBaseTransport):
    """httpx transport over `_Connection`s; see the module docstring."""

    def __init__(self, limits: httpx.Limits, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._max = limits.max_connections or 1_000_000
        self._max_idle = limits.max_keepalive_connections if limits.max_keepalive_connections is not None else self._max
        self._expiry = limits.keepalive_expiry
        self._ssl_context = ssl_context
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._open = 0  # live connections: checked out, connecting or idle
        # Requests waiting for a slot: each gets a connection of its origin, or None (a free slot).
        self._slot_waiters: collections.deque[tuple[_Origin | None, asyncio.Future[_Connection | None]]] = (
            collections.deque())
        self._closed = False

    def _ssl(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()
        return self._ssl_context

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        origin = origin_of(request.url)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = request.content if isinstance(request.stream, httpx.ByteStream) else None
        return await self.send(origin, _request_head(request), body, timeouts, request=request,
                               head_only=request.method == "HEAD")

    async def send(
        self,
        origin: _Origin,
        head: bytes,
        body: bytes | None,
        timeouts: Mapping[str, float | None],
        *,
        request: httpx.Request | None = None,
        head_only: bool = False,
    ) -> httpx.Response:
        """One exchange from an encoded request head (request line and headers, ending
        with the blank line) and its body: what `handle_async_request` does after
        encoding an `httpx.Request`, for callers that keep their head pre-encoded (the
        provider client builds one per path). ``body`` None means `request`'s stream
        is sent as it comes."""
        if self._closed:
            raise httpx.ConnectError("the client is closed")
        for attempt in range(2):
            # A resend (attempt 1) never takes an idle connection: the one that failed was one.
            conn = self._checkout(origin) if attempt == 0 else None
            if conn is None:
                conn = await self._slot(origin, timeouts.get("pool"), handed=attempt == 0)
            if conn is None:
                conn = await self._connect(origin, timeouts)
            try:
                conn.begin()
                if body is not None:
                    await conn.write(head + body, timeouts.get("write"))
                else:
                    assert request is not None, "a streamed body needs its request"
                    await conn.write(head, timeouts.get("write"))
                    await _send_stream(conn, request, timeouts.get("write"))
                while not conn.headers_done:
                    await conn.wait(timeouts.get("read"))
            except _ClosedBeforeResponse:
                conn.close()
                self.release(conn, reusable=False)
                if conn.requests and attempt == 0:
                    continue  # the keep-alive race: the server closed it as we reused it
                raise httpx.RemoteProtocolError("the upstream closed the connection before answering") from None
            except BaseException:
                conn.close()
                self.release(conn, reusable=False)
                raise
            if head_only:
                conn.complete = conn.delimited = True
            return httpx.Response(
                conn.status,
                headers=conn.headers,
                stream=_Body(self, conn, timeouts.get("read")),
                request=request,
                extensions=_ENCODED if conn.encoded else _PLAIN,
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _checkout(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.closed or (self._expiry is not None and now - conn.idle_since > self._expiry):
                conn.close()
                self._free_slot()
                continue
            return conn
        return None

    async def _connect(self, origin: _Origin, timeouts: Mapping[str, float | None]) -> _Connection:
        """Opens a connection in a slot already counted for it (freed again on failure)."""
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        conn = _Connection(origin)
        name = host.decode("ascii")
        try:
            async with asyncio.timeout(timeouts.get("connect")):
                if scheme == b"https":
                    await loop.create_connection(lambda: conn, name, port, ssl=self._ssl(), server_hostname=name)
                else:
                    await loop.create_connection(lambda: conn, name, port)
        except TimeoutError:
            self._free_slot()
            raise httpx.ConnectTimeout(f"timed out connecting to {name}:{port}") from None
        except ssl.SSLError as exc:
            self._free_slot()
            raise httpx.ConnectError(f"TLS handshake with {name}:{port} failed: {exc}") from None
        except OSError as exc:
            self._free_slot()
            raise httpx.ConnectError(f"cannot connect to {name}:{port}: {exc.strerror or exc}") from None
        except BaseException:
            self._free_slot()
            raise
        return conn

    async def _slot(self, origin: _Origin, seconds: float | None, *, handed: bool = True) -> _Connection | None:
        """Counts a slot for a new connection (returns None), or waits for a connection of
        `origin` handed back by another request (returns it; only when `handed`) or for a
        free slot. Every path leaves exactly one slot counted for the caller."""
        if self._open < self._max:
            self._open += 1
            return None
        # An idle connection (another origin's, or any on a resend) makes room at once.
        for idle in self._idle.values():
            if idle:
                idle.pop(0).close()  # its slot passes to us
                return None
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        entry = (origin if handed else None, waiter)
        self._slot_waiters.append(entry)
        try:
            async with asyncio.timeout(seconds):
                return await waiter  # handed over still counted
        except TimeoutError:
            raise httpx.PoolTimeout("timed out waiting for a free upstream connection") from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():  # handed over just as we gave up: pass it on
                given = waiter.result()
                if given is not None:
                    self.release(given, reusable=True)
                else:
                    self._free_slot()
            raise
        finally:
            if entry in self._slot_waiters:
                self._slot_waiters.remove(entry)

    def _free_slot(self) -> None:
        while self._slot_waiters:
            _, waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the waiter, still counted
                return
        self._open -= 1

    def release(self, conn: _Connection, *, reusable: bool) -> None:
        if reusable and not self._closed:
            for entry in self._slot_waiters:
                if entry[0] == conn.origin and not entry[1].done():
                    self._slot_waiters.remove(entry)
                    entry[1].set_result(conn)
                    return
        if reusable and not self._closed and not self._slot_waiters:
            idle = self._idle.setdefault(conn.origin, [])
            if len(idle) < self._max_idle:
                conn.idle_since = time.monotonic()
                idle.append(conn)
                return
        conn.close()
        self._free_slot()

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
                self._free_slot()
        self._idle.clear()

    def open_connections(self) -> int:
        """Connections counted against `max_connections` (for tests and diagnostics)."""
        return self._open

    def idle_connections(self) -> int:
        """How many connections sit in the pool (for tests and diagnostics)."""
        return sum(len(idle) for idle in self._idle.values())


def origin_of(url: httpx.URL) -> _Origin:
    """The pool key of a URL: scheme, host and port (http and https only)."""
    scheme = url.raw_scheme
    if scheme not in (b"http", b"https"):
        raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme.decode()!r}")
    return scheme, url.raw_host, url.port or (443 if scheme == b"https" else 80)


def _request_head(request: httpx.Request) -> bytes:
    target = request.url.raw_path
    lines = [request.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


async def _send_stream(conn: _Connection, request: httpx.Request, seconds: float | None) -> None:
    """A streamed request body: as it comes, chunked unless a content-length was set."""
    chunked = "content-length" not in request.headers
    stream: Any = request.stream
    async for piece in stream:
        if piece:
            await conn.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece, seconds)
    if chunked:
        await conn.write(b"0\r\n\r\n", seconds)
