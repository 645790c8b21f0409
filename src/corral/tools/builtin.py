"""Built-in tools without side effects on the machine: ``time`` and ``http_fetch``."""

from __future__ import annotations

import fnmatch
import ipaddress
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from corral.config.agents import HttpFetchToolConfig
from corral.llm.types import ToolSpec
from corral.tools.base import FunctionToolset, ToolContext, ToolError, ToolResult

TIME_SPEC = ToolSpec(
    name="current_time",
    description="The current date and time, in UTC or in an IANA time zone.",
    parameters={"type": "object", "properties": {
        "timezone": {"type": "string", "description": "IANA zone such as Europe/Paris; default UTC"}}},
)


def time_toolset(name: str = "time") -> FunctionToolset:
    async def current_time(arguments: dict[str, Any], _: ToolContext) -> ToolResult:
        zone_name = str(arguments.get("timezone") or "UTC")
        try:
            zone = UTC if zone_name.upper() == "UTC" else ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ToolError(f"unknown time zone {zone_name!r}") from None
        now = datetime.now(zone)
        return ToolResult.json({"timezone": zone_name, "iso": now.isoformat(), "unix": int(now.timestamp()),
                                "weekday": now.strftime("%A")})

    return FunctionToolset(name, {"current_time": (TIME_SPEC, current_time)})


FETCH_SPEC = ToolSpec(
    name="http_fetch",
    description="Fetch a URL over HTTP(S) and return the status and the body as text (truncated to a limit).",
    parameters={"type": "object", "required": ["url"], "properties": {
        "url": {"type": "string"},
        "method": {"type": "string", "description": "GET by default"},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "body": {"type": "string"}}},
)


def host_allowed(host: str, config: HttpFetchToolConfig) -> bool:
    host = host.lower().rstrip(".")
    if any(_host_matches(host, p) for p in config.deny_hosts):
        return False
    if config.allow_hosts is None:
        return True
    return any(_host_matches(host, p) for p in config.allow_hosts)


def _host_matches(host: str, pattern: str) -> bool:
    pattern = pattern.lower()
    if "/" in pattern:  # a CIDR range
        try:
            return ipaddress.ip_address(host) in ipaddress.ip_network(pattern, strict=False)
        except ValueError:
            return False
    return fnmatch.fnmatchcase(host, pattern)


def http_fetch_toolset(
    name: str, config: HttpFetchToolConfig, *, transport: httpx.AsyncBaseTransport | None = None
) -> FunctionToolset:
    async def fetch(arguments: dict[str, Any], _: ToolContext) -> ToolResult:
        url = str(arguments.get("url") or "")
        method = str(arguments.get("method") or "GET").upper()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ToolError(f"not an http(s) URL: {url!r}")
        if method not in {m.upper() for m in config.methods}:
            raise ToolError(f"method {method} is not allowed; allowed: {', '.join(config.methods)}")
        if not host_allowed(parts.hostname, config):
            raise ToolError(f"host {parts.hostname!r} is not allowed")
        headers = {str(k): str(v) for k, v in (arguments.get("headers") or {}).items()}
        # Redirects are not followed: a redirect could lead to a host the allowlist forbids.
        async with httpx.AsyncClient(timeout=config.timeout, transport=transport, follow_redirects=False) as client:
            try:
                async with client.stream(method, url, headers=headers, content=arguments.get("body")) as response:
                    body, truncated = await _read_capped(response, config.max_bytes)
            except httpx.TimeoutException:
                raise ToolError(f"timed out after {config.timeout:g}s fetching {url}") from None
            except httpx.HTTPError as exc:
                raise ToolError(f"fetch failed: {exc}") from None
        text = body.decode(response.encoding or "utf-8", errors="replace")
        return ToolResult.json({"status": response.status_code, "content_type": response.headers.get("content-type"),
                                "location": response.headers.get("location"), "truncated": truncated, "body": text})

    return FunctionToolset(name, {"http_fetch": (FETCH_SPEC, fetch)})


async def _read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit], True
    return b"".join(chunks), False
