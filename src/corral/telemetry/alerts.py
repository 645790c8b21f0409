"""Alert routes: event types (glob patterns) -> Slack, Discord or generic webhooks.

Each route has its own queue and worker, a per-minute rate limit (excess alerts are
counted and dropped, never queued without bound) and retries with backoff.

Used by the fleet supervisor (policy, node and session alerts) and the gateway (budget
alerts).
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections import deque
from typing import Any

import httpx

from corral.config.alerts import AlertRouteConfig

log = logging.getLogger("corral.alerts")


def _text(alert: dict[str, Any]) -> str:
    parts = [f"[corral] {alert['type']}"]
    for key in ("node_id", "session_id", "project", "scope", "owner"):
        if alert.get(key):
            parts.append(f"{key}={alert[key]}")
    data = alert.get("data") or {}
    for key in ("policy", "action", "result", "reason", "error", "threshold_percent", "spend_usd", "max_budget_usd"):
        if key in data:
            parts.append(f"{key}={data[key]}")
    return " ".join(parts)


def body_for(kind: str, alert: dict[str, Any]) -> dict[str, Any]:
    if kind == "slack":
        return {"text": _text(alert)}
    if kind == "discord":
        return {"content": _text(alert)[:2000]}
    return alert


class _Route:
    def __init__(self, config: AlertRouteConfig, client: httpx.AsyncClient) -> None:
        self.config, self.client = config, client
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self.sent: deque[float] = deque()
        self.delivered = self.failed = self.rate_limited = 0

    def matches(self, kind: str) -> bool:
        return any(fnmatch.fnmatchcase(kind, pattern) for pattern in self.config.events)

    def offer(self, alert: dict[str, Any]) -> None:
        now = time.monotonic()
        while self.sent and now - self.sent[0] > 60:
            self.sent.popleft()
        if len(self.sent) >= self.config.max_per_minute or self.queue.full():
            self.rate_limited += 1
            return
        self.sent.append(now)
        self.queue.put_nowait(alert)

    async def run(self) -> None:
        while True:
            alert = await self.queue.get()
            await self._deliver(alert)

    async def _deliver(self, alert: dict[str, Any]) -> None:
        url = self.config.url.get_secret_value()
        body = body_for(self.config.kind, alert)
        for attempt in range(self.config.retries + 1):
            try:
                response = await self.client.post(url, json=body, timeout=self.config.timeout_seconds)
                if response.status_code < 300:
                    self.delivered += 1
                    return
                retryable = response.status_code == 429 or response.status_code >= 500
                log.warning("alert route %s got HTTP %d", self.config.name, response.status_code)
                if not retryable:
                    break
            except httpx.HTTPError as exc:
                log.warning("alert route %s: %s", self.config.name, type(exc).__name__)
            if attempt < self.config.retries:
                await asyncio.sleep(self.config.backoff_base_ms / 1000 * 2 ** attempt)
        self.failed += 1


def _identity(config: AlertRouteConfig) -> tuple[str, str]:
    return config.model_dump_json(), config.url.get_secret_value()  # the dump masks the URL


class Alerter:
    def __init__(self, routes: list[AlertRouteConfig], client: httpx.AsyncClient | None = None) -> None:
        self._client = client or httpx.AsyncClient()
        self.routes = [_Route(r, self._client) for r in routes]
        self._tasks: dict[_Route, asyncio.Task[None]] = {}
        self._started = False

    def start(self) -> None:
        self._started = True
        for route in self.routes:
            self._start(route)

    def _start(self, route: _Route) -> None:
        self._tasks[route] = asyncio.create_task(route.run(), name=f"alert-{route.config.name}")

    def apply(self, configs: list[AlertRouteConfig]) -> None:
        """A live reload: unchanged routes keep their queue and counters; changed, new and
        removed routes are replaced (a replaced route's queued alerts are dropped and logged)."""
        unchanged = {_identity(r.config): r for r in self.routes}
        routes: list[_Route] = []
        for config in configs:
            kept = unchanged.pop(_identity(config), None)
            routes.append(kept if kept is not None else _Route(config, self._client))
        for old in unchanged.values():
            task = self._tasks.pop(old, None)
            if task is not None:
                task.cancel()
            if old.queue.qsize():
                log.warning("alert route %s replaced by a reload; %d queued alerts dropped", old.config.name,
                            old.queue.qsize())
        self.routes = routes
        if self._started:
            for route in routes:
                if route not in self._tasks:
                    self._start(route)

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await self._client.aclose()

    def wants(self, alert_type: str) -> bool:
        """Whether any route takes alerts of this type (callers skip building the rest)."""
        return any(route.matches(alert_type) for route in self.routes)

    def notify(self, alert: dict[str, Any]) -> None:
        for route in self.routes:
            if route.matches(str(alert.get("type"))):
                route.offer(alert)

    def stats(self) -> dict[str, dict[str, int]]:
        return {r.config.name: {"delivered": r.delivered, "failed": r.failed, "rate_limited": r.rate_limited}
                for r in self.routes}
