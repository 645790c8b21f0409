"""Real health probes, one per service kind.

Each probe makes one attempt and classifies the outcome, so the boot manager can
tell "not running" (retry), "starting up" (retry) and "rejected our credentials"
(stop at once) apart. Services declared by host/port only (no URL) are checked for
liveness, like `pg_isready`: a server that answers the protocol but asks for a login
we were not given is up. With a URL, its credentials are tried for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

import httpx

from corral.boot.specs import ServiceSpec
from corral.config.services import DEFAULT_PORTS


class Status(StrEnum):
    UP = "up"
    DOWN = "down"  # nothing listening, unreachable, or no answer in time
    STARTING = "starting"  # answers, but says it is not ready yet
    REJECTED = "rejected"  # answers and refuses our credentials or target: retrying cannot help
    UNHEALTHY = "unhealthy"  # answers with an error


@dataclass(frozen=True)
class ProbeResult:
    status: Status
    latency_ms: float | None
    detail: str

    @property
    def ok(self) -> bool:
        return self.status is Status.UP

    @property
    def retryable(self) -> bool:
        return self.status is not Status.REJECTED


def host_port(spec: ServiceSpec) -> tuple[str, int]:
    if spec.url:
        parts = urlsplit(spec.url)
        default = DEFAULT_PORTS.get(spec.type, 443 if parts.scheme == "https" else 80)
        return parts.hostname or "127.0.0.1", parts.port or default
    return spec.host or "127.0.0.1", spec.port or DEFAULT_PORTS.get(spec.type, 80)


def base_url(spec: ServiceSpec) -> str:
    if spec.url:
        return spec.url.rstrip("/")
    host, port = host_port(spec)
    return f"http://{host}:{port}"


async def probe(spec: ServiceSpec, *, http: httpx.AsyncClient) -> ProbeResult:
    """One health probe of `spec`, never raising for a service's failure."""
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(_dispatch(spec, http), timeout=spec.timeout + 1.0)
    except TimeoutError:
        result = ProbeResult(Status.DOWN, None, f"no answer within {spec.timeout:g}s")
    if result.latency_ms is None and result.status is not Status.DOWN:
        return ProbeResult(result.status, (time.perf_counter() - started) * 1000, result.detail)
    return result


async def _dispatch(spec: ServiceSpec, http: httpx.AsyncClient) -> ProbeResult:
    kind = spec.health_kind
    if kind == "postgres":
        return await probe_postgres(spec)
    if kind == "redis":
        return await probe_redis(spec)
    if kind == "tcp":
        return await probe_tcp(spec)
    if kind == "command":
        return await probe_command(spec)
    if kind == "qdrant":
        paths = [spec.health_path] if spec.health_path else ["/readyz", "/healthz", "/"]
        return await probe_http(spec, http, paths)
    if kind == "chroma":
        paths = [spec.health_path] if spec.health_path else ["/api/v2/heartbeat", "/api/v1/heartbeat"]
        return await probe_http(spec, http, paths)
    return await probe_http(spec, http, [spec.health_path or ""])


def _elapsed(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _refused(exc: BaseException) -> bool:
    """Whether a client library's error was, underneath, a refused connection."""
    seen: BaseException | None = exc
    for _ in range(8):  # libraries wrap it a few layers deep
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _os_error_detail(exc: OSError, host: str, port: int) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused at {host}:{port}"
    text = exc.strerror or str(exc) or type(exc).__name__
    return f"cannot connect to {host}:{port}: {text}"


async def probe_tcp(spec: ServiceSpec) -> ProbeResult:
    host, port = host_port(spec)
    started = time.perf_counter()
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), spec.timeout)
    except TimeoutError:
        return ProbeResult(Status.DOWN, None, f"no answer from {host}:{port} within {spec.timeout:g}s")
    except OSError as exc:
        return ProbeResult(Status.DOWN, None, _os_error_detail(exc, host, port))
    latency = _elapsed(started)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeResult(Status.UP, latency, f"accepting TCP connections on {host}:{port}")


async def probe_postgres(spec: ServiceSpec) -> ProbeResult:
    import asyncpg

    from corral.store.engine import without_pooler

    host, port = host_port(spec)
    liveness_only = spec.url is None
    started = time.perf_counter()
    try:
        if spec.url:
            conn = await asyncpg.connect(without_pooler(spec.url), timeout=spec.timeout)
        else:
            conn = await asyncpg.connect(host=host, port=port, user="postgres", database="postgres",
                                         timeout=spec.timeout)
        try:  # no arguments: the simple protocol, one round trip even behind a transaction pooler
            await conn.execute("SELECT 1", timeout=spec.timeout)
        finally:
            await conn.close(timeout=spec.timeout)
    except TimeoutError:
        return ProbeResult(Status.DOWN, None, f"no answer from {host}:{port} within {spec.timeout:g}s")
    except OSError as exc:
        return ProbeResult(Status.DOWN, None, _os_error_detail(exc, host, port))
    except asyncpg.CannotConnectNowError as exc:  # 57P03: starting up, shutting down, recovering
        return ProbeResult(Status.STARTING, _elapsed(started), f"not ready: {exc}")
    except (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidCatalogNameError) as exc:
        if liveness_only:
            return ProbeResult(Status.UP, _elapsed(started), "accepting connections (no URL: login not checked)")
        what = "database not found" if isinstance(exc, asyncpg.InvalidCatalogNameError) else "credentials rejected"
        return ProbeResult(Status.REJECTED, _elapsed(started), f"{what}: {exc} [SQLSTATE {exc.sqlstate}]")
    except asyncpg.PostgresError as exc:
        return ProbeResult(Status.UNHEALTHY, _elapsed(started), f"{exc} [SQLSTATE {exc.sqlstate}]")
    except (asyncpg.InterfaceError, ConnectionError) as exc:
        return ProbeResult(Status.DOWN, None, f"connection to {host}:{port} failed: {exc}")
    return ProbeResult(Status.UP, _elapsed(started), "SELECT 1 ok")


async def probe_redis(spec: ServiceSpec) -> ProbeResult:
    from redis import exceptions as rexc
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    host, port = host_port(spec)
    once = Retry(NoBackoff(), 0)  # the boot manager does the retrying, with backoff
    if spec.url:
        client = Redis.from_url(spec.url, socket_connect_timeout=spec.timeout, socket_timeout=spec.timeout,
                                retry=once)
    else:
        client = Redis(host=host, port=port, socket_connect_timeout=spec.timeout, socket_timeout=spec.timeout,
                       retry=once)
    started = time.perf_counter()
    try:
        await client.ping()
    except rexc.AuthenticationError as exc:
        if spec.url is None:
            return ProbeResult(Status.UP, _elapsed(started), "accepting connections (no URL: AUTH not checked)")
        return ProbeResult(Status.REJECTED, _elapsed(started), f"credentials rejected: {exc}")
    except rexc.BusyLoadingError as exc:
        return ProbeResult(Status.STARTING, _elapsed(started), f"not ready: {exc}")
    except rexc.TimeoutError:
        return ProbeResult(Status.DOWN, None, f"no answer from {host}:{port} within {spec.timeout:g}s")
    except rexc.ConnectionError as exc:
        refused = _refused(exc)
        detail = f"connection refused at {host}:{port}" if refused else str(exc)
        return ProbeResult(Status.DOWN, None, detail)
    except rexc.ResponseError as exc:
        return ProbeResult(Status.UNHEALTHY, _elapsed(started), f"PING failed: {exc}")
    finally:
        await client.aclose()
    return ProbeResult(Status.UP, _elapsed(started), "PONG")


async def probe_http(spec: ServiceSpec, http: httpx.AsyncClient, paths: list[str]) -> ProbeResult:
    """GET each path in turn; a 404/410 moves on to the next (older APIs)."""
    root = base_url(spec)
    result = ProbeResult(Status.DOWN, None, "no path to probe")
    for path in paths:
        url = root + ("/" + path.lstrip("/") if path else "")
        started = time.perf_counter()
        try:
            response = await http.get(url, timeout=spec.timeout)
        except httpx.TimeoutException:
            return ProbeResult(Status.DOWN, None, f"GET {url}: no answer within {spec.timeout:g}s")
        except httpx.ConnectError as exc:
            refused = _refused(exc)
            return ProbeResult(Status.DOWN, None, f"GET {url}: " + ("connection refused" if refused else str(exc)))
        except httpx.HTTPError as exc:
            return ProbeResult(Status.DOWN, None, f"GET {url}: {exc}")
        latency = _elapsed(started)
        code = response.status_code
        result = _classify_http(spec, url, code, latency)
        if code not in (404, 410):
            return result
    return result


def _classify_http(spec: ServiceSpec, url: str, code: int, latency: float) -> ProbeResult:
    healthy = code in spec.expect_status if spec.expect_status else 200 <= code < 300
    if healthy:
        return ProbeResult(Status.UP, latency, f"GET {url} -> {code}")
    if code in (401, 403):
        return ProbeResult(Status.REJECTED, latency, f"GET {url} -> {code}: credentials rejected")
    if code in (502, 503, 504):
        return ProbeResult(Status.STARTING, latency, f"GET {url} -> {code}: not ready")
    return ProbeResult(Status.UNHEALTHY, latency, f"GET {url} -> {code}")


async def probe_command(spec: ServiceSpec) -> ProbeResult:
    argv = spec.health_command
    started = time.perf_counter()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
    except OSError as exc:
        return ProbeResult(Status.DOWN, None, f"cannot run {argv[0]}: {exc.strerror or exc}")
    try:
        output, _ = await asyncio.wait_for(process.communicate(), spec.timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        return ProbeResult(Status.DOWN, None, f"{argv[0]} did not finish within {spec.timeout:g}s")
    latency = _elapsed(started)
    lines = output.decode(errors="replace").strip().splitlines()
    last = lines[-1][:200] if lines else ""
    if process.returncode == 0:
        return ProbeResult(Status.UP, latency, last or "exit 0")
    return ProbeResult(Status.UNHEALTHY, latency, f"exit {process.returncode}" + (f": {last}" if last else ""))
