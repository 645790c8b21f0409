"""Load generators: wrk when installed, else a raw asyncio HTTP/1.1 client (httpx
itself would be the bottleneck); plus the time-to-first-token probe.

Both report requests, seconds, RPS, latency percentiles (ms) and errors.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import percentile


@dataclass(frozen=True)
class Target:
    """One thing to load: where, which path, which body, which headers."""

    name: str
    port: int
    path: str
    body: bytes
    headers: dict[str, str]
    fresh_session: bool = False  # a new x-corral-session-id on every request (agent sessions)


SESSION_HEADER = "x-corral-session-id"


def wrk_path() -> str | None:
    return shutil.which("wrk")


_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
    .. '"mean_us":%f,"max_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def _lua_string(raw: str) -> str:
    level = 1
    while f"]{'=' * level}]" in raw:
        level += 1
    return f"[{'=' * level}[{raw}]{'=' * level}]"


_WRK_SESSION = """
local counter = 0
math.randomseed(os.time() + math.floor(os.clock() * 1e6))  -- a new tag per run: ids never repeat across runs
local thread_tag = tostring(os.time()) .. "-" .. tostring(math.random(1, 1e9))
request = function()
  counter = counter + 1
  wrk.headers["SESSION_HEADER"] = "bench-" .. thread_tag .. "-" .. counter
  return wrk.format()
end
""".replace("SESSION_HEADER", SESSION_HEADER)


def wrk_script(target: Target) -> str:
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(target.body.decode())}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in target.headers.items()]
    return "\n".join(lines) + "\n" + _WRK_DONE + (_WRK_SESSION if target.fresh_session else "")


def run_wrk(target: Target, *, concurrency: int, seconds: float, threads: int,
            cpus: list[int] | None = None) -> dict[str, Any]:
    wrk = wrk_path()
    assert wrk is not None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(wrk_script(target))
    argv = [wrk, "-t", str(max(1, min(threads, concurrency))), "-c", str(concurrency),
            "-d", f"{max(1, round(seconds))}s", "--timeout", "10s", "-s", script.name,
            f"http://127.0.0.1:{target.port}{target.path}"]
    if cpus:
        argv = ["taskset", "-c", ",".join(map(str, cpus)), *argv] if shutil.which("taskset") else argv
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    finally:
        Path(script.name).unlink(missing_ok=True)
    match = re.search(r"BENCH_JSON (\{.*\})", out.stdout)
    if match is None:
        raise RuntimeError(f"wrk gave no result: {out.stdout}\n{out.stderr}")
    raw = json.loads(match.group(1))
    secs = raw["duration_us"] / 1e6
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    return {"requests": raw["requests"], "seconds": secs, "rps": raw["requests"] / secs if secs else 0.0,
            "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
            "mean_ms": raw["mean_us"] / 1000, "max_ms": raw["max_us"] / 1000, "errors": errors,
            "non_2xx": raw["status"], "generator": "wrk"}


# ---- the asyncio fallback -------------------------------------------------------


class RawConnection:
    """One keep-alive HTTP/1.1 connection; enough of the protocol for these answers
    (content-length or chunked bodies)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer)

    def close(self) -> None:
        self.writer.close()

    async def request(self, target: Target, *, first_marker: bytes | None = None, session: str | None = None
                      ) -> tuple[int, float | None, dict[str, str]]:
        """Sends one request, reads the whole answer; returns (status, seconds until
        `first_marker` was first seen in the body when asked, the response headers)."""
        started = time.perf_counter()
        head = [f"POST {target.path} HTTP/1.1", f"host: 127.0.0.1:{target.port}",
                f"content-length: {len(target.body)}"]
        head += [f"{k}: {v}" for k, v in target.headers.items()]
        if session is not None:
            head.append(f"{SESSION_HEADER}: {session}")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + target.body)
        raw_head = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
        first: float | None = None
        seen = b""
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
            if first_marker is not None and first_marker in body:
                first = time.perf_counter() - started
        else:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                data = await self.reader.readexactly(size + 2)
                if first_marker is not None and first is None:
                    seen += data
                    if first_marker in seen:
                        first = time.perf_counter() - started
                if size == 0:
                    break
        return status, first, headers


async def _load(target: Target, concurrency: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker(number: int) -> None:
        nonlocal errors
        conn = await RawConnection.open(target.port)
        sent = 0
        try:
            while time.perf_counter() < stop_at:
                sent += 1
                session = f"bench-{id(conn)}-{number}-{sent}" if target.fresh_session else None
                t0 = time.perf_counter()
                status, _, _ = await conn.request(target, session=session)
                latencies.append(time.perf_counter() - t0)
                if status >= 400:
                    errors += 1
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    elapsed = time.perf_counter() - started
    ms = [x * 1000 for x in latencies]
    return {"requests": len(ms), "seconds": elapsed, "rps": len(ms) / elapsed if elapsed else 0.0,
            "p50_ms": percentile(ms, 50), "p90_ms": percentile(ms, 90), "p99_ms": percentile(ms, 99),
            "mean_ms": sum(ms) / len(ms) if ms else float("nan"), "max_ms": max(ms, default=float("nan")),
            "errors": errors, "non_2xx": errors, "generator": "asyncio"}


def _run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def run_asyncio(target: Target, *, concurrency: int, seconds: float) -> dict[str, Any]:
    return dict(_run(_load(target, concurrency, seconds)))


def run_load(target: Target, *, concurrency: int, seconds: float, use_wrk: bool, threads: int = 1,
             cpus: list[int] | None = None) -> dict[str, Any]:
    if use_wrk:
        return run_wrk(target, concurrency=concurrency, seconds=seconds, threads=threads, cpus=cpus)
    return run_asyncio(target, concurrency=concurrency, seconds=seconds)


# ---- time to first token ----------------------------------------------------------


async def _sequential(targets: list[Target], count: int, warmup: int, marker: bytes) -> dict[str, Any]:
    """One connection per target; the targets take turns request by request, so a
    burst of noise from elsewhere on the machine hits them all alike."""
    conns = [await RawConnection.open(t.port) for t in targets]
    firsts: list[list[float]] = [[] for _ in targets]
    reported: list[list[float]] = [[] for _ in targets]  # x-corral-overhead-ms, when the server sends it
    try:
        for n in range(warmup + count):
            for i, (target, conn) in enumerate(zip(targets, conns, strict=True)):
                status, first, headers = await conn.request(target, first_marker=marker)
                if status != 200 or first is None:
                    raise RuntimeError(f"{target.name}: answered {status} without {marker!r}")
                if n >= warmup:
                    firsts[i].append(first * 1000)
                    if "x-corral-overhead-ms" in headers:
                        reported[i].append(float(headers["x-corral-overhead-ms"]))
    finally:
        for conn in conns:
            conn.close()
    results: dict[str, Any] = {}
    for i, target in enumerate(targets):
        result = {"ttft_p50_ms": percentile(firsts[i], 50), "ttft_p99_ms": percentile(firsts[i], 99),
                  "ttft_samples": count}
        if reported[i]:
            result["reported_overhead_p50_ms"] = percentile(reported[i], 50)
        results[target.name] = result
    return results


def measure_sequential(targets: list[Target], *, count: int, warmup: int = 20, marker: bytes = b"data:"
                       ) -> dict[str, Any]:
    """Sequential requests, one connection per target: time from sending the request
    to the first `marker` bytes of the answer (`data:` for streams: the first token)."""
    return dict(_run(_sequential(targets, count, warmup, marker)))
