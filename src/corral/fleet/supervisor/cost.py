"""Cost reports from usage events, and optional polling of provider usage APIs.

Session, node, project and model costs come from ``usage`` events priced with the
pricing table. When admin keys are configured, the Anthropic usage report and OpenAI
organization usage are polled too; a provider that keeps failing is marked "degraded"
and reports then rest on the event-based estimate alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx

from corral.config.fleet import CostConfig
from corral.fleet.store import FleetStore
from corral.llm.pricing import PricingTable
from corral.llm.types import Usage

log = logging.getLogger("corral.fleet.cost")
PERIODS = {"today": 0, "week": 7, "month": 30}


def period_start(period: str, now: float) -> float:
    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}")
    midnight = now - now % 86400
    return midnight if period == "today" else now - PERIODS[period] * 86400


def _anthropic_rows(body: dict[str, Any]) -> Iterator[tuple[str, str, int, int]]:
    for bucket in body.get("data", []):
        day = str(bucket.get("starting_at", ""))[:10]
        for r in bucket.get("results", []):
            tokens_in = int(r.get("uncached_input_tokens", 0)) + int(r.get("cache_read_input_tokens", 0))
            cache = r.get("cache_creation") or {}
            tokens_in += sum(int(v) for v in cache.values() if isinstance(v, int))
            yield day, str(r.get("model") or "unknown"), tokens_in, int(r.get("output_tokens", 0))


def _openai_rows(body: dict[str, Any]) -> Iterator[tuple[str, str, int, int]]:
    for bucket in body.get("data", []):
        day = time.strftime("%Y-%m-%d", time.gmtime(int(bucket.get("start_time", 0))))
        for r in bucket.get("results", []):
            yield day, str(r.get("model") or "unknown"), int(r.get("input_tokens", 0)), int(r.get("output_tokens", 0))


class CostPoller:
    def __init__(self, config: CostConfig, store: FleetStore, prices: PricingTable,
                 client: httpx.AsyncClient | None = None) -> None:
        self.config, self.store, self.prices = config, store, prices
        self.client = client or httpx.AsyncClient(timeout=config.request_timeout_seconds)
        self.status: dict[str, dict[str, Any]] = {
            name: {"status": "pending", "last_error": None, "last_success": None} for name in config.providers}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.config.providers:
            self._task = asyncio.create_task(self._loop(), name="fleet-cost-poll")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.client.aclose()

    def apply(self, config: CostConfig, prices: PricingTable) -> None:
        """A live reload: new prices and providers; polling starts when the first provider appears."""
        self.config, self.prices = config, prices
        self.status = {name: self.status.get(name, {"status": "pending", "last_error": None, "last_success": None})
                       for name in config.providers}
        if config.providers and self._task is None:
            self.start()

    async def _loop(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self.config.poll_interval_minutes * 60)

    async def poll_once(self) -> None:
        for name in self.config.providers:
            try:
                rows = await self._fetch(name)
                for day, model, tokens_in, tokens_out in rows:
                    cost = self.prices.cost(Usage(input_tokens=tokens_in, output_tokens=tokens_out), model)
                    await self.store.upsert_provider_cost(name, model, day, cost, tokens_in + tokens_out)
                self.status[name] = {"status": "ok", "last_error": None, "last_success": time.time()}
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                log.warning("usage polling for %s failed: %s", name, exc)
                self.status[name] = {**self.status[name], "status": "degraded", "last_error": str(exc)[:300]}

    async def _fetch(self, name: str) -> list[tuple[str, str, int, int]]:
        provider = self.config.providers[name]  # type: ignore[index]
        key = provider.admin_api_key.get_secret_value()
        start = time.time() - 30 * 86400
        if name == "anthropic":
            url = (provider.base_url or "https://api.anthropic.com") + "/v1/organizations/usage_report/messages"
            params: dict[str, Any] = {"starting_at": time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(start)),
                                      "bucket_width": "1d", "group_by[]": "model"}
            headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
            return list(_anthropic_rows(await self._get(url, params, headers)))
        url = (provider.base_url or "https://api.openai.com") + "/v1/organization/usage/completions"
        params = {"start_time": int(start), "bucket_width": "1d", "group_by": "model"}
        return list(_openai_rows(await self._get(url, params, {"Authorization": f"Bearer {key}"})))

    async def _get(self, url: str, params: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        attempt = 0
        while True:
            response = await self.client.get(url, params=params, headers=headers)
            retryable = response.status_code == 429 or response.status_code >= 500
            if response.status_code < 300:
                body = response.json()
                if not isinstance(body, dict):
                    raise ValueError("usage API returned a non-object")
                return body
            if not retryable or attempt >= self.config.max_retries:
                raise ValueError(f"usage API answered HTTP {response.status_code}")
            await asyncio.sleep(self.config.backoff_base_ms / 1000 * 2 ** attempt)
            attempt += 1

    async def report(self, period: str, now: float | None = None) -> dict[str, Any]:
        since = period_start(period, now or time.time())
        report = await self.store.cost_report(since)
        report["period"] = period
        report["providers"] = self.status
        report["degraded"] = any(s["status"] == "degraded" for s in self.status.values())
        return report
