"""Alerts to a loopback receiver, provider usage polling against a loopback fake, audit retention."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from corral.config.fleet import AlertRouteConfig, CostConfig
from corral.fleet.store import EventRow, FleetStore
from corral.fleet.supervisor.alerts import Alerter
from corral.fleet.supervisor.cost import CostPoller
from corral.fleet.testing import SimulatedNode, wait_until
from corral.llm.pricing import PricingTable
from corral.store.engine import make_engine
from corral.telemetry.redact import MASK
from corral.testing.server import serve_app

from .conftest import TOKEN, Fleet


class Receiver:
    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.fail_first = fail_first
        self.calls = 0
        self.app = Starlette(routes=[Route("/{name}", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        self.calls += 1
        if self.calls <= self.fail_first:
            return Response(status_code=503)
        self.received.append((request.path_params["name"], await request.json()))
        return Response(status_code=204)


async def test_alert_routes_deliver_in_each_format_with_retries() -> None:
    receiver = Receiver(fail_first=2)
    async with serve_app(receiver.app) as base:
        routes = [AlertRouteConfig(name="slack", kind="slack", url=f"{base}/slack", events=["node.*"], backoff_base_ms=10),
                  AlertRouteConfig(name="discord", kind="discord", url=f"{base}/discord", events=["policy.*"]),
                  AlertRouteConfig(name="hook", kind="webhook", url=f"{base}/hook", events=["*"])]
        alerter = Alerter(routes)
        alerter.start()
        alerter.notify({"type": "node.offline", "node_id": "n1", "data": {"reason": "silent"}})
        alerter.notify({"type": "policy.retry_cap", "session_id": "s1", "data": {"policy": "resume_on_idle"}})
        await wait_until(lambda: len(receiver.received) == 4, 5, "four deliveries")
        await alerter.stop()
    by_name: dict[str, list[dict[str, Any]]] = {}
    for name, body in receiver.received:
        by_name.setdefault(name, []).append(body)
    assert by_name["slack"] == [{"text": "[corral] node.offline node_id=n1 reason=silent"}]
    assert by_name["discord"] == [{"content": "[corral] policy.retry_cap session_id=s1 policy=resume_on_idle"}]
    assert [b["type"] for b in by_name["hook"]] == ["node.offline", "policy.retry_cap"]
    assert alerter.stats()["slack"]["delivered"] == 1 and receiver.calls == 6  # two 503s were retried


async def test_alert_route_rate_limit_drops_the_excess() -> None:
    receiver = Receiver()
    async with serve_app(receiver.app) as base:
        alerter = Alerter([AlertRouteConfig(name="hook", url=f"{base}/hook", events=["*"], max_per_minute=3)])
        alerter.start()
        for i in range(10):
            alerter.notify({"type": "session.error", "session_id": f"s{i}"})
        await wait_until(lambda: len(receiver.received) == 3, 5, "three deliveries")
        await asyncio.sleep(0.1)
        await alerter.stop()
    assert [b["session_id"] for _, b in receiver.received] == ["s0", "s1", "s2"]
    assert alerter.stats()["hook"] == {"delivered": 3, "failed": 0, "rate_limited": 7}


async def test_supervisor_alerts_when_a_node_goes_offline(fleet: Fleet) -> None:
    receiver = Receiver()
    async with serve_app(receiver.app) as base:
        await fleet.start_supervisor(alerts=[{"name": "ops", "kind": "slack", "url": f"{base}/ops",
                                              "events": ["node.offline"]}])
        sim = SimulatedNode(fleet.ws_url, TOKEN, "quiet")
        await sim.connect()  # then never heartbeats
        await wait_until(lambda: bool(receiver.received), 5, "an offline alert")
        await sim.close()
    assert receiver.received[0][1]["text"].startswith("[corral] node.offline node_id=quiet")


def _usage_api(status: dict[str, int]) -> Starlette:
    async def anthropic(request: Request) -> Response:
        assert request.headers["x-api-key"] == "admin-a" and request.headers["anthropic-version"] == "2023-06-01"
        if status["anthropic"] != 200:
            return Response(status_code=status["anthropic"])
        return JSONResponse({"data": [{"starting_at": time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime()),
                                       "results": [{"model": "claude-sonnet-4-20250514", "uncached_input_tokens": 1_000_000,
                                                    "cache_read_input_tokens": 0, "output_tokens": 100_000}]}]})

    async def openai(request: Request) -> Response:
        assert request.headers["authorization"] == "Bearer admin-o"
        return JSONResponse({"data": [{"start_time": int(time.time()), "results": [
            {"model": "gpt-4o-mini", "input_tokens": 2_000_000, "output_tokens": 1_000_000}]}]})

    return Starlette(routes=[Route("/v1/organizations/usage_report/messages", anthropic),
                             Route("/v1/organization/usage/completions", openai)])


async def test_provider_usage_polling_and_degraded_mark(tmp_path: Path) -> None:
    status = {"anthropic": 200}
    store = FleetStore(make_engine(f"sqlite:///{tmp_path / 'f.db'}"))
    await store.migrate()
    async with serve_app(_usage_api(status)) as base:
        config = CostConfig.model_validate({"max_retries": 1, "backoff_base_ms": 1, "providers": {
            "anthropic": {"admin_api_key": "admin-a", "base_url": base},
            "openai": {"admin_api_key": "admin-o", "base_url": base}}})
        poller = CostPoller(config, store, PricingTable())
        await poller.poll_once()
        report = await poller.report("today")
        assert report["degraded"] is False
        assert report["provider_reported"]["anthropic"] == pytest.approx(3.0 + 1.5)  # sonnet: $3 in, $15 out
        assert report["provider_reported"]["openai"] == pytest.approx(0.3 + 0.6)
        status["anthropic"] = 500
        await poller.poll_once()
        report = await poller.report("week")
        await poller.stop()
    assert report["degraded"] is True
    assert report["providers"]["anthropic"]["status"] == "degraded"
    assert "HTTP 500" in report["providers"]["anthropic"]["last_error"]
    assert report["providers"]["openai"]["status"] == "ok"
    assert report["provider_reported"]["anthropic"] == pytest.approx(4.5)  # last good figures are kept
    await store.close()


async def test_audit_retention_purge_runs_on_its_schedule(fleet: Fleet) -> None:
    sup = await fleet.start_supervisor(audit={"retention_days": 1, "purge_interval_seconds": 0.05},
                                       event_retention_days=0)
    old = {"actor": "a", "action": "old", "target": None, "args": {"token": "secret"}, "result": "success",
           "error": None, "source": None, "ts": time.time() - 2 * 86400}
    await sup.store.insert_audit([old])
    await sup.audit.record(actor="t", action="fresh", target=None, args={"api_key": "sk-123456789abc"},
                           result="success")

    async def purged() -> bool:
        return [a["action"] for a in await sup.store.list_audit()] == ["fresh"]

    await wait_until(purged, 5, "the old entry purged")
    assert sup.retention.audit_purged_total == 1 and sup.retention.events_purged_total == 0
    assert (await sup.store.list_audit())[0]["args"] == {"api_key": MASK}


async def test_events_are_purged_with_the_audit_schedule_and_counted(fleet: Fleet) -> None:
    sup = await fleet.start_supervisor(audit={"retention_days": 30, "purge_interval_seconds": 0.05},
                                       event_retention_days=2)
    now = time.time()
    rows = [EventRow(node_id="old-node", seq=i, envelope_id=f"e{i}", type="session.idle", session_id=None,
                     project=None, model=None, input_tokens=0, output_tokens=0, cost_usd=0.0,
                     ts=now - (3 if i <= 25_000 else 1) * 86400, data={})
            for i in range(1, 25_011)]
    await sup.store.insert_events(rows)

    async def purged() -> bool:
        return sup.retention.events_purged_total == 25_000

    await wait_until(purged, 10, "events older than two days purged (in chunks)")
    left = await sup.store.list_events(node_id="old-node", limit=1000)
    assert [e["seq"] for e in left] == list(range(25_001, 25_011))
    assert fleet.api is not None
    metrics = (await fleet.api.get("/metrics")).text
    assert "corral_fleet_events_purged_total 25000.0" in metrics
