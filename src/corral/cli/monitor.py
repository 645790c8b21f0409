"""`corral monitor`: a health dashboard — services, the gateway's own health, its request
and error rates (from /metrics), and fleet nodes online when a supervisor is given.

Every source is optional: a gateway that is not running, a /metrics that needs a key,
or no supervisor each show as such instead of breaking the dashboard.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table

from corral.boot.processes import ProcessTable
from corral.boot.specs import ServiceSpec
from corral.boot.status import ServiceCheck, check_services, probe_client
from corral.cli._services import CONFIG_OPTION_HELP, console, load, specs_for, stack_dirs, status_table

# Request counters we recognise, best first; any other counter ending in "requests" is the fallback.
REQUEST_COUNTERS = ("corral_http_requests", "corral_requests", "http_requests")
STATUS_LABELS = ("status", "status_code", "code")


@dataclass
class GatewayView:
    url: str
    health: str = "unknown"  # "ok", "down", or the status the gateway reported
    detail: str = ""
    version: str | None = None
    latency_ms: float | None = None
    requests: float | None = None  # counter totals from /metrics
    errors: float | None = None
    request_rate: float | None = None  # per second, between two refreshes
    error_rate: float | None = None
    metrics_note: str = ""


@dataclass
class FleetView:
    url: str
    online: int | None = None
    total: int | None = None
    detail: str = ""


@dataclass
class Snapshot:
    checks: list[ServiceCheck]
    gateway: GatewayView | None
    fleet: FleetView | None
    taken_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    clock: float = field(default_factory=time.monotonic)


def request_totals(text: str) -> tuple[float, float] | None:
    """(requests, 5xx errors) summed over a Prometheus text exposition, or None if no
    request counter is exposed."""
    from prometheus_client.parser import text_string_to_metric_families

    counters = {f.name: f for f in text_string_to_metric_families(text) if f.type == "counter"}
    name = next((n for n in REQUEST_COUNTERS if n in counters), None)
    name = name or next((n for n in sorted(counters) if n.endswith("requests")), None)
    if name is None:
        return None
    requests = errors = 0.0
    for sample in counters[name].samples:
        if not sample.name.endswith("_total"):
            continue
        requests += sample.value
        status = next((str(sample.labels[k]) for k in STATUS_LABELS if k in sample.labels), "")
        if status.startswith("5") or status == "error":
            errors += sample.value
    return requests, errors


async def gateway_view(http: httpx.AsyncClient, url: str, api_key: str | None,
                       previous: GatewayView | None, elapsed: float | None) -> GatewayView:
    view = GatewayView(url=url)
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    started = time.perf_counter()
    try:
        response = await http.get(f"{url}/health", timeout=3.0)
    except httpx.HTTPError as exc:
        view.health, view.detail = "down", f"not reachable: {type(exc).__name__}"
        return view
    view.latency_ms = round((time.perf_counter() - started) * 1000, 1)
    body = _json(response)
    view.health = "ok" if response.status_code == 200 else f"HTTP {response.status_code}"
    view.version = body.get("version") if isinstance(body.get("version"), str) else None
    try:
        metrics = await http.get(f"{url}/metrics", headers=headers, timeout=3.0)
    except httpx.HTTPError as exc:
        view.metrics_note = f"/metrics not reachable: {type(exc).__name__}"
        return view
    if metrics.status_code != 200:
        hint = " (pass --api-key)" if metrics.status_code in (401, 403) and not api_key else ""
        view.metrics_note = f"/metrics answered {metrics.status_code}{hint}"
        return view
    totals = request_totals(metrics.text)
    if totals is None:
        view.metrics_note = "no request counter in /metrics"
        return view
    view.requests, view.errors = totals
    if previous and previous.requests is not None and previous.errors is not None and elapsed:
        view.request_rate = max(0.0, (view.requests - previous.requests) / elapsed)
        view.error_rate = max(0.0, (view.errors - previous.errors) / elapsed)
    return view


async def fleet_view(http: httpx.AsyncClient, url: str, token: str | None) -> FleetView:
    view = FleetView(url=url)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        response = await http.get(f"{url}/api/v1/nodes", headers=headers, timeout=3.0)
    except httpx.HTTPError as exc:
        view.detail = f"supervisor not reachable: {type(exc).__name__}"
        return view
    if response.status_code in (401, 403):
        view.detail = "supervisor rejected the token (--supervisor-token / CORRAL_FLEET_TOKEN)"
        return view
    body = _json(response)
    nodes = body.get("data") if isinstance(body, dict) else None
    if response.status_code != 200 or not isinstance(nodes, list):
        view.detail = f"unexpected answer from the supervisor (HTTP {response.status_code})"
        return view
    view.total = len(nodes)
    view.online = sum(1 for n in nodes if isinstance(n, dict) and n.get("status") == "online")
    return view


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {"data": data}


async def collect(specs: list[ServiceSpec], http: httpx.AsyncClient, *, gateway_url: str | None,
                  api_key: str | None = None, supervisor_url: str | None = None, supervisor_token: str | None = None,
                  previous: Snapshot | None = None, processes: ProcessTable | None = None) -> Snapshot:
    clock = time.monotonic()
    elapsed = clock - previous.clock if previous else None
    checks_job = check_services(specs, http=http, processes=processes)
    gateway_job = gateway_view(http, gateway_url.rstrip("/"), api_key, previous.gateway if previous else None,
                               elapsed) if gateway_url else _none()
    fleet_job = fleet_view(http, supervisor_url.rstrip("/"), supervisor_token) if supervisor_url else _none()
    checks, gateway, fleet = await asyncio.gather(checks_job, gateway_job, fleet_job)
    return Snapshot(checks=checks, gateway=gateway, fleet=fleet, clock=clock)


async def _none() -> None:
    return None


def render(snapshot: Snapshot) -> RenderableType:
    parts: list[RenderableType] = []
    if snapshot.checks:
        parts.append(status_table(snapshot.checks, title="services"))
    else:
        parts.append("services: none configured")
    if snapshot.gateway is not None:
        parts.append(Panel(_gateway_table(snapshot.gateway), title=f"gateway {snapshot.gateway.url}",
                           title_align="left"))
    if snapshot.fleet is not None:
        parts.append(Panel(_fleet_line(snapshot.fleet), title=f"fleet {snapshot.fleet.url}", title_align="left"))
    up = sum(1 for c in snapshot.checks if c.result and c.result.ok)
    down = sum(1 for c in snapshot.checks if c.spec.enabled and not (c.result and c.result.ok))
    disabled = sum(1 for c in snapshot.checks if not c.spec.enabled)
    stamp = snapshot.taken_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    parts.append(f"healthy {up} | not up {down} | disabled {disabled} | last updated {stamp}")
    return Group(*parts)


def _gateway_table(view: GatewayView) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    style = "green" if view.health == "ok" else "red"
    health = f"[{style}]{view.health}[/]" + (f" ({view.latency_ms:.1f} ms)" if view.latency_ms is not None else "")
    table.add_row("health", health + (f" — {view.detail}" if view.detail else ""))
    if view.version:
        table.add_row("version", view.version)
    if view.requests is not None:
        table.add_row("requests", f"{view.requests:g} total, {_rate(view.request_rate)}")
        table.add_row("errors (5xx)", f"{view.errors or 0:g} total, {_rate(view.error_rate)}")
    elif view.metrics_note:
        table.add_row("metrics", view.metrics_note)
    return table


def _rate(value: float | None) -> str:
    return "rate after the next refresh" if value is None else f"{value:.2f}/s"


def _fleet_line(view: FleetView) -> str:
    if view.total is None:
        return f"[red]{view.detail}[/]"
    return f"nodes online: [green]{view.online}[/] of {view.total}"


def default_gateway_url(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


async def run_monitor(specs: list[ServiceSpec], *, live: bool, interval: float, iterations: int,
                      gateway_url: str | None, api_key: str | None, supervisor_url: str | None,
                      supervisor_token: str | None, out: Any, processes: ProcessTable | None = None) -> Snapshot:
    from rich.live import Live

    async with probe_client() as http:
        async def snap(previous: Snapshot | None) -> Snapshot:
            return await collect(specs, http, gateway_url=gateway_url, api_key=api_key,
                                 supervisor_url=supervisor_url, supervisor_token=supervisor_token, previous=previous,
                                 processes=processes)

        snapshot = await snap(None)
        if not live:
            out.print(render(snapshot))
            return snapshot
        count = 1
        with Live(render(snapshot), console=out, refresh_per_second=4, transient=False) as screen:
            while iterations == 0 or count < iterations:
                await asyncio.sleep(interval)
                snapshot = await snap(snapshot)
                screen.update(render(snapshot))
                count += 1
        return snapshot


def register(app: typer.Typer) -> None:
    @app.command()
    def monitor(
        config: Path | None = typer.Option(None, "--config", "-c", help=CONFIG_OPTION_HELP),
        live: bool = typer.Option(False, "--live", help="Refresh in place until Ctrl-C."),
        interval: float = typer.Option(5.0, "--interval", "-i", min=0.1, help="Seconds between refreshes."),
        iterations: int = typer.Option(0, "--iterations", "-n", min=0, help="With --live: stop after N (0: never)."),
        gateway: str | None = typer.Option(None, "--gateway", help="Gateway URL (default: from server: in config)."),
        no_gateway: bool = typer.Option(False, "--no-gateway", help="Do not show the gateway."),
        api_key: str | None = typer.Option(None, "--api-key", envvar="CORRAL_API_KEY",
                                           help="Bearer key for the gateway's /metrics."),
        supervisor: str | None = typer.Option(None, "--supervisor", envvar="CORRAL_FLEET_URL",
                                              help="Fleet supervisor HTTP URL, e.g. http://127.0.0.1:8421."),
        supervisor_token: str | None = typer.Option(None, "--supervisor-token", envvar="CORRAL_FLEET_TOKEN",
                                                    help="Fleet token for the supervisor API."),
    ) -> None:
        """A health dashboard: services, the gateway, its request and error rates, fleet nodes."""
        loaded = load(config)
        specs = specs_for(loaded)
        server = loaded.config.server
        gateway_url = None if no_gateway else (gateway or default_gateway_url(server.host, server.port))
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_monitor(specs, live=live, interval=interval, iterations=iterations,
                                    gateway_url=gateway_url, api_key=api_key, supervisor_url=supervisor,
                                    supervisor_token=supervisor_token, out=console(),
                                    processes=ProcessTable(stack_dirs()[0])))
