"""Corral's HTTP/1.1 client wire: keep-alive connections on asyncio protocols,
responses parsed by httptools (the C parser uvicorn uses). It is the only way a
provider reaches its upstream (`HttpClient` in `_http.py` is its one caller), tests
included, and it speaks proxies itself.

Why it exists: measured on the benchmark machine, httpx's own transport (httpcore and
anyio) costs several times the CPU per proxied request of this wire, and aiohttp's
client about an eighth more at c=16 (docs/performance.md, "The upstream client").
httpx remains a library the wire uses, not the client: its typed exceptions (every
failure below is one of them, so `HttpClient.transport_error` maps it), `httpx.Headers`
for an error answer's headers, and its decoders for a compressed body.

The contract, in `Wire.send`'s signature: an `Origin` (the pool key), the request head
already encoded (request line and headers, ending with the blank line), the body, and
`Timeouts`; back comes a `WireResponse` whose body is read from the connection as it
arrives. What the wire does, and how it fails:

- a pool per origin, last-in first-out, bounded by ``max_connections`` (waiting for a
  slot is bounded by the ``pool`` timeout) and ``keepalive_expiry``;
- a pooled connection the server closed while idle is noticed (its protocol saw the
  EOF) and dropped; a request whose reused connection turns out to be closed before a
  single response byte arrives is sent once more on a new connection (the keep-alive
  race every HTTP/1.1 client has);
- ``connect`` (TCP, proxy tunnel and TLS together), ``read`` (between any two reads)
  and ``write`` timeouts;
- bodies by content-length, chunked, or until close; a response cut short raises
  `httpx.RemoteProtocolError`, garbage raises it too;
- closing a response before its end closes its connection (it cannot be reused); a
  cancelled request closes its connection;
- TLS verified against certifi's authorities or ``SSL_CERT_FILE``/``SSL_CERT_DIR``
  (`TlsTrust`);
- proxies (`Proxies`, from ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``/``NO_PROXY``):
  an https origin through a ``CONNECT`` tunnel, then TLS with the origin inside it; an
  http origin by forwarding (the request target in absolute form). ``user:password@``
  in the proxy URL becomes ``Proxy-Authorization: Basic``. A proxy that refuses raises
  `httpx.ProxyError`.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import ipaddress
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple, cast
from urllib.parse import unquote, urlsplit

import certifi
import httptools
import httpx

_READ_HIGH_WATER = 256 * 1024  # buffered response bytes at which the socket is paused
_MAX_TUNNEL_HEAD = 16 * 1024  # a proxy's answer to CONNECT longer than this is garbage


class Origin(NamedTuple):
    """Where a request goes, and the pool's key: scheme (``http``/``https``), host, port."""

    scheme: bytes
    host: bytes
    port: int


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds (None: no bound) for connecting (proxy tunnel and TLS included), each
    read, each write, and waiting for a free connection."""

    connect: float | None
    read: float | None
    write: float | None
    pool: float | None


def origin_of(url: httpx.URL) -> Origin:
    """The pool key of a URL (http and https only)."""
    scheme = url.raw_scheme
    if scheme not in (b"http", b"https"):
        raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme.decode()!r}")
    return Origin(scheme, url.raw_host, url.port or (443 if scheme == b"https" else 80))


# ---- proxies -----------------------------------------------------------------------


class ProxyConfigError(ValueError):
    """A proxy variable names something the wire cannot use (the message says which)."""


@dataclass(frozen=True, slots=True)
class Proxy:
    """One HTTP proxy server, and the ``Proxy-Authorization`` value it is sent (if any)."""

    host: str
    port: int
    authorization: bytes | None = None

    @classmethod
    def parse(cls, url: str, *, variable: str) -> Proxy:
        """``http://[user:password@]host[:port]`` (no scheme means http)."""
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http":
            raise ProxyConfigError(f"{variable}: only http:// proxies are supported, not {parts.scheme}://")
        if not parts.hostname:
            raise ProxyConfigError(f"{variable}: no proxy host in the URL")
        try:
            port = parts.port or 80
        except ValueError:
            raise ProxyConfigError(f"{variable}: the proxy port is not a number") from None
        authorization = None
        if parts.username is not None:
            user_password = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = b"Basic " + base64.b64encode(user_password.encode())
        return cls(parts.hostname, port, authorization)


@dataclass(frozen=True, slots=True)
class Proxies:
    """Which proxy (if any) serves which origin. ``Proxies()`` means none."""

    http: Proxy | None = None  # for http:// origins: forwarded
    https: Proxy | None = None  # for https:// origins: tunnelled with CONNECT
    no_proxy: tuple[str, ...] = ()  # hosts (and their subdomains), host:port, CIDR blocks, or "*"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Proxies:
        """The curl convention: ``https_proxy``/``HTTPS_PROXY`` for https origins,
        ``http_proxy``/``HTTP_PROXY`` for http ones, ``ALL_PROXY`` for both when the
        other is unset, ``NO_PROXY`` for exceptions (lower-case names win)."""

        def read(name: str) -> tuple[str, str] | None:
            for variable in (name.lower(), name):
                value = env.get(variable, "").strip()
                if value:
                    return variable, value
            return None

        fallback = read("ALL_PROXY")
        chosen: dict[str, Proxy | None] = {}
        for scheme in ("http", "https"):
            found = read(f"{scheme.upper()}_PROXY") or fallback
            chosen[scheme] = Proxy.parse(found[1], variable=found[0]) if found else None
        skip = read("NO_PROXY")
        no_proxy = tuple(e.strip().lower() for e in skip[1].split(",") if e.strip()) if skip else ()
        return cls(chosen["http"], chosen["https"], no_proxy)

    def for_origin(self, origin: Origin) -> Proxy | None:
        proxy = self.https if origin.scheme == b"https" else self.http
        if proxy is None or self._bypassed(origin):
            return None
        return proxy

    def _bypassed(self, origin: Origin) -> bool:
        host = origin.host.decode("ascii").lower().strip("[]")
        try:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
        except ValueError:
            address = None
        for entry in self.no_proxy:
            if entry == "*":
                return True
            if "/" in entry:  # a CIDR block
                try:
                    if address is not None and address in ipaddress.ip_network(entry, strict=False):
                        return True
                except ValueError:
                    pass
                continue
            name, _, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
            if port and port != str(origin.port):
                continue
            name = name.strip("[]").lstrip(".")
            if host == name or (address is None and host.endswith("." + name)):
                return True
        return False


@dataclass(frozen=True, slots=True)
class TlsTrust:
    """The certificate authorities the wire verifies upstreams against: certifi's bundle,
    or a file or directory of one's own (``SSL_CERT_FILE``/``SSL_CERT_DIR``, as OpenSSL
    and httpx read them)."""

    cafile: str | None = None
    capath: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TlsTrust:
        return cls(env.get("SSL_CERT_FILE") or None, env.get("SSL_CERT_DIR") or None)

    def context(self) -> ssl.SSLContext:
        if self.cafile or self.capath:
            return ssl.create_default_context(cafile=self.cafile, capath=self.capath)
        return ssl.create_default_context(cafile=certifi.where())


@dataclass(frozen=True, slots=True)
class Network:
    """How the wire reaches upstreams: through which proxies, trusting which authorities."""

    proxies: Proxies = Proxies()
    trust: TlsTrust = TlsTrust()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Network:
        """Read once, where providers are built (`corral.llm.registry`); raises
        `ProxyConfigError` for a proxy variable the wire cannot use."""
        return cls(Proxies.from_env(env), TlsTrust.from_env(env))


# ---- one connection ------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: the asyncio protocol and the httptools callbacks."""

    def __init__(self, origin: Origin) -> None:
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

    # ---- used by the wire ----------------------------------------------------------

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


class _TunnelHandshake(asyncio.Protocol):
    """Reads a proxy's answer to ``CONNECT`` (its head; a tunnel answer has no body)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.answered: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.answered.done():  # bytes after the answer, before TLS: the proxy misbehaves
            self.buffer += data
            return
        self.buffer += data
        if b"\r\n\r\n" in self.buffer or len(self.buffer) > _MAX_TUNNEL_HEAD:
            self.answered.set_result(self.buffer)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answered.done():
            self.answered.set_exception(httpx.ProxyError("the proxy closed the connection during CONNECT"))


# ---- a response ---------------------------------------------------------------------


class Body(httpx.AsyncByteStream):
    """The body of one response, read from its connection as it arrives (iterating it
    gives the bytes as they came, content-encoding untouched)."""

    def __init__(self, wire: Wire, conn: _Connection, read_timeout: float | None) -> None:
        self._wire = wire
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
            self._wire.release(conn, reusable=reusable)


class WireResponse:
    """A response's status and headers, and its `body` still on the connection. Close it
    (`aclose`) unless the body was read to its end."""

    __slots__ = ("_headers", "body", "encoded", "raw_headers", "status")

    def __init__(self, status: int, raw_headers: list[tuple[bytes, bytes]], encoded: bool, body: Body) -> None:
        self.status = status
        self.raw_headers = raw_headers
        self.encoded = encoded  # a content-encoding came: read through `decoded()`
        self.body = body
        self._headers: httpx.Headers | None = None

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header (``name`` lower-case), without building `headers`."""
        for key, value in self.raw_headers:
            if len(key) == len(name) and key.lower() == name:
                return value
        return None

    @property
    def headers(self) -> httpx.Headers:
        if self._headers is None:
            self._headers = httpx.Headers(self.raw_headers)
        return self._headers

    def decoded(self) -> httpx.Response:
        """The response for httpx's decoders (``aread``, ``aiter_bytes``): for a body
        with a content-encoding."""
        return httpx.Response(self.status, headers=self.raw_headers, stream=self.body)

    async def aclose(self) -> None:
        await self.body.aclose()


# ---- the pool -----------------------------------------------------------------------


class Wire:
    """Pooled HTTP/1.1 connections to any number of origins; see the module docstring."""

    def __init__(
        self,
        *,
        max_connections: int,
        keepalive_expiry: float | None = 5.0,
        network: Network | None = None,
    ) -> None:
        self._max = max_connections
        self._expiry = keepalive_expiry
        network = network or Network()
        self._proxies = network.proxies
        self._forwarding = self._proxies.http is not None  # http origins may need their heads rewritten
        self._trust = network.trust
        self._ssl_context: ssl.SSLContext | None = None  # built on the first TLS connection
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open = 0  # live connections: checked out, connecting or idle
        # Requests waiting for a slot: each gets a connection of its origin, or None (a free slot).
        self._slot_waiters: collections.deque[tuple[Origin | None, asyncio.Future[_Connection | None]]] = (
            collections.deque())
        self._closed = False

    def _ssl(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = self._trust.context()
        return self._ssl_context

    async def send(
        self, origin: Origin, head: bytes, body: bytes, timeouts: Timeouts, *, head_only: bool = False
    ) -> WireResponse:
        """One exchange: ``head`` is the request line and headers, ending with the blank
        line, in origin form (``POST /v1/x HTTP/1.1``; the wire rewrites it for a
        forwarding proxy); ``body`` follows it (empty for none). ``head_only``: the
        answer has no body whatever its headers say (a ``HEAD`` request)."""
        if self._closed:
            raise httpx.ConnectError("the client is closed")
        if self._forwarding and origin.scheme == b"http":
            proxy = self._proxies.for_origin(origin)
            if proxy is not None:
                head = _absolute_form(head, origin, proxy)
        for attempt in range(2):
            # A resend (attempt 1) never takes an idle connection: the one that failed was one.
            conn = self._checkout(origin) if attempt == 0 else None
            if conn is None:
                conn = await self._slot(origin, timeouts.pool, handed=attempt == 0)
            if conn is None:
                conn = await self._connect(origin, timeouts.connect)
            try:
                conn.begin()
                await conn.write(head + body if body else head, timeouts.write)
                while not conn.headers_done:
                    await conn.wait(timeouts.read)
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
            return WireResponse(conn.status, conn.headers, conn.encoded, Body(self, conn, timeouts.read))
        raise AssertionError("unreachable")  # pragma: no cover

    def _checkout(self, origin: Origin) -> _Connection | None:
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

    async def _connect(self, origin: Origin, seconds: float | None) -> _Connection:
        """Opens a connection in a slot already counted for it (freed again on failure):
        straight to the origin, to a forwarding proxy, or through a proxy's tunnel."""
        name = origin.host.decode("ascii")
        proxy = self._proxies.for_origin(origin)
        where = f"{name}:{origin.port}" if proxy is None else f"the proxy {proxy.host}:{proxy.port}"
        conn = _Connection(origin)
        try:
            async with asyncio.timeout(seconds):
                await self._open_connection(conn, origin, name, proxy)
        except TimeoutError:
            self._free_slot()
            conn.close()
            raise httpx.ConnectTimeout(f"timed out connecting to {where}") from None
        except ssl.SSLError as exc:
            self._free_slot()
            conn.close()
            raise httpx.ConnectError(f"TLS handshake with {name}:{origin.port} failed: {exc}") from None
        except OSError as exc:
            self._free_slot()
            conn.close()
            raise httpx.ConnectError(f"cannot connect to {where}: {exc.strerror or exc}") from None
        except BaseException:
            self._free_slot()
            conn.close()
            raise
        return conn

    async def _open_connection(self, conn: _Connection, origin: Origin, name: str, proxy: Proxy | None) -> None:
        loop = asyncio.get_running_loop()
        tls = origin.scheme == b"https"
        if proxy is None:
            if tls:
                await loop.create_connection(lambda: conn, name, origin.port, ssl=self._ssl(), server_hostname=name)
            else:
                await loop.create_connection(lambda: conn, name, origin.port)
            return
        if not tls:  # a forwarding proxy: the connection is to the proxy, the heads name the origin
            await loop.create_connection(lambda: conn, proxy.host, proxy.port)
            return
        transport, handshake = await loop.create_connection(_TunnelHandshake, proxy.host, proxy.port)
        try:
            authority = _authority(origin, always_port=True)
            request = [b"CONNECT ", authority, b" HTTP/1.1\r\nHost: ", authority, b"\r\n"]
            if proxy.authorization is not None:
                request += (b"Proxy-Authorization: ", proxy.authorization, b"\r\n")
            transport.write(b"".join([*request, b"\r\n"]))
            answer = await handshake.answered
            head, _, rest = answer.partition(b"\r\n\r\n")
            status_line = head.split(b"\r\n", 1)[0]
            parts = status_line.split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
                raise httpx.ProxyError(f"the proxy answered CONNECT with garbage: {status_line[:80]!r}")
            if not 200 <= int(parts[1]) < 300:
                text = status_line.decode("latin-1")
                raise httpx.ProxyError(f"the proxy {proxy.host}:{proxy.port} refused CONNECT {name}: {text}")
            if rest or len(handshake.buffer) > len(answer):
                raise httpx.ProxyError("the proxy sent bytes before the tunnelled TLS handshake")
            tunnelled = await loop.start_tls(transport, conn, self._ssl(), server_hostname=name)
        except BaseException:
            transport.close()
            raise
        if tunnelled is None:  # start_tls returns None only when the loop is closing
            raise httpx.ConnectError("the event loop closed during the TLS handshake")
        conn.connection_made(tunnelled)

    async def _slot(self, origin: Origin, seconds: float | None, *, handed: bool = True) -> _Connection | None:
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
            if len(idle) < self._max:
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
        """Connections counted against ``max_connections`` (for tests and diagnostics)."""
        return self._open

    def idle_connections(self) -> int:
        """How many connections sit in the pool (for tests and diagnostics)."""
        return sum(len(idle) for idle in self._idle.values())


def _absolute_form(head: bytes, origin: Origin, proxy: Proxy) -> bytes:
    """An origin-form head rewritten for a forwarding proxy: the request target as a whole
    URL, and the proxy's credentials."""
    method, _, rest = head.partition(b" ")
    authority = _authority(origin, always_port=False)
    line_end = rest.index(b"\r\n") + 2
    credentials = b"Proxy-Authorization: %s\r\n" % proxy.authorization if proxy.authorization else b""
    return b"%s http://%s%s%s%s" % (method, authority, rest[:line_end], credentials, rest[line_end:])


def _authority(origin: Origin, *, always_port: bool) -> bytes:
    host = b"[%s]" % origin.host if b":" in origin.host else origin.host  # an IPv6 address
    default = 443 if origin.scheme == b"https" else 80
    return host if origin.port == default and not always_port else b"%s:%d" % (host, origin.port)
