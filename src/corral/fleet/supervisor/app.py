"""The supervisor: builds every component from SupervisorConfig and runs them all."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from prometheus_client import CollectorRegistry

from corral.config.errors import ConfigError
from corral.config.fleet import SupervisorConfig, load_fleet_config
from corral.fleet.store import EventRow, FleetStore
from corral.fleet.supervisor.alerts import Alerter
from corral.fleet.supervisor.audit import AuditLog
from corral.fleet.supervisor.auth import TokenSet
from corral.fleet.supervisor.chatops import ChatOps
from corral.fleet.supervisor.commands import Dispatcher
from corral.fleet.supervisor.cost import CostPoller
from corral.fleet.supervisor.events import EventPipeline
from corral.fleet.supervisor.http import build_http_app
from corral.fleet.supervisor.hub import Hub
from corral.fleet.supervisor.metrics import FleetMetrics, command_histogram
from corral.fleet.supervisor.policies import PolicyEngine
from corral.fleet.supervisor.reload import RESTART_ONLY, changed_keys, file_hash, needs_restart, watch
from corral.fleet.supervisor.retention import Retention
from corral.fleet.supervisor.state import FleetState
from corral.llm.pricing import PricingTable
from corral.store.engine import default_database_url, make_engine

log = logging.getLogger("corral.fleet.supervisor")


def tls_context(config: SupervisorConfig) -> ssl.SSLContext | None:
    if config.tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(config.tls.cert), str(config.tls.key))
    return context


def _listening_socket(host: str, port: int) -> socket.socket:
    """A TCP listener for uvicorn. The protocol must be IPPROTO_TCP, not 0 (what
    `socket.create_server` leaves): asyncio turns Nagle off only on connections whose socket
    says TCP, and with Nagle on each answer waited ~40 ms for the client's delayed ACK."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


class Supervisor:
    def __init__(self, config: SupervisorConfig, token: str, *, config_path: Path | None = None,
                 server_overrides: Mapping[str, Any] | None = None, watch_interval: float | None = None) -> None:
        """``server_overrides`` are the command line's ``server.*`` values (they outlive a reload);
        ``watch_interval`` polls ``config_path`` for changes and reloads them (``--watch``)."""
        self.config, self.config_path = config, config_path
        self.server_overrides = dict(server_overrides or {})
        self.watch_interval = watch_interval
        self.config_hash = file_hash(config_path) if config_path else ""
        self.reloads: Counter[str] = Counter()  # "success" / "failure"
        self.reload_error: str | None = None  # the last rejected reload's errors, until one succeeds
        self._reload_requests: asyncio.Queue[str] = asyncio.Queue()
        self.store = FleetStore(make_engine(config.database_url or default_database_url("fleet.db")))
        self.state = FleetState(finished_retention=config.sessions.finished_retention_seconds,
                                max_finished=config.sessions.max_finished_in_memory)
        self.tokens = TokenSet(token, config.auth.rotation_overlap_seconds)
        prices = PricingTable(config.cost.pricing)
        self.pipeline = EventPipeline(self.store, self.state, prices, batch_size=config.event_batch_size,
                                      flush_ms=config.event_flush_ms)
        self.audit = AuditLog(self.store, enabled=config.audit.enabled)
        self.retention = Retention(self.store, audit_days=config.audit.retention_days,
                                   event_days=config.event_retention_days,
                                   interval=config.audit.purge_interval_seconds)
        self.registry = CollectorRegistry()  # this supervisor's metrics; FleetMetrics publishes the rest
        self.dispatcher = Dispatcher(self.store, self.state, self.audit, default_timeout=config.command_timeout_seconds,
                                     idempotency_ttl=config.idempotency_ttl_seconds,
                                     durations=command_histogram(self.registry))
        s = config.server
        self.hub = Hub(state=self.state, store=self.store, pipeline=self.pipeline, dispatcher=self.dispatcher,
                       tokens=self.tokens, origin_allowlist=config.origin_allowlist,
                       heartbeat_interval=s.heartbeat_interval_seconds, missed_count=s.heartbeat_missed_count,
                       max_frame_bytes=s.max_frame_bytes, ssl_context=tls_context(config))
        self.policies = PolicyEngine(config.policies, self.state, self.dispatcher, self.pipeline, self.audit)
        self.cost = CostPoller(config.cost, self.store, prices)
        self.alerter = Alerter(config.alerts)
        self.http_client = httpx.AsyncClient()  # chat-ops answers to Slack's response_url
        self.chatops = ChatOps(config.chatops, state=self.state, store=self.store, dispatcher=self.dispatcher,
                               cost=self.cost, audit=self.audit)
        self.metrics = FleetMetrics(self, self.registry)
        self.pipeline.listeners += [self._alert_on, self.policies.on_events]
        self.ws_port = 0
        self.http_port = 0
        self._http: uvicorn.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def _alert_on(self, rows: list[EventRow]) -> None:
        if not self.alerter.routes:  # the usual case: nothing to build per stored event
            return
        for row in rows:
            if not self.alerter.wants(row.type):
                continue
            self.alerter.notify({"type": row.type, "node_id": row.data.get("node_id", row.node_id),
                                 "session_id": row.session_id, "project": row.project, "ts": row.ts,
                                 "data": row.data})

    async def start(self) -> None:
        await self.store.migrate()
        self.state.load(await self.store.load_nodes(), await self.store.load_sessions())
        await self.pipeline.start()
        self.alerter.start()
        self.retention.start()
        self.policies.start()
        self.cost.start()
        s = self.config.server
        self.ws_port = await self.hub.start(s.host, s.port)
        if s.http_port:
            await self._start_http(s.host, s.http_port)
        self._tasks.append(asyncio.create_task(self._reload_tokens(), name="fleet-token-reload"))
        self._tasks.append(asyncio.create_task(self._reload_loop(), name="fleet-config-reload"))
        if self.watch_interval and self.config_path is not None:
            watcher = watch(self.config_path, self.request_reload, loaded_hash=self.config_hash,
                            interval=self.watch_interval)
            self._tasks.append(asyncio.create_task(watcher, name="fleet-config-watch"))
        self._tasks.append(asyncio.create_task(self._evict_finished(), name="fleet-session-eviction"))
        log.info("supervisor listening: ws %s:%d, http %s", s.host, self.ws_port, self.http_port or "disabled")

    async def _start_http(self, host: str, port: int) -> None:
        cfg = uvicorn.Config(build_http_app(self), host=host, port=port, log_level="warning", lifespan="off",
                             ssl_certfile=str(self.config.tls.cert) if self.config.tls else None,
                             ssl_keyfile=str(self.config.tls.key) if self.config.tls else None)
        # The socket is bound here so the port is known at once (port 0 in tests). `serve()`
        # catches SIGINT/SIGTERM while it runs and raises them again once it has stopped; the
        # CLI's own handlers (the loop's wakeup fd) still see them and stop the whole supervisor.
        sock = _listening_socket(host, port)
        self.http_port = int(sock.getsockname()[1])
        self._http = uvicorn.Server(cfg)
        task = asyncio.create_task(self._http.serve(sockets=[sock]), name="fleet-http")
        self._tasks.append(task)
        while not self._http.started:
            await asyncio.sleep(0.01)
            if task.done():
                task.result()
                raise RuntimeError("the supervisor's HTTP API stopped while starting")

    async def _reload_tokens(self) -> None:
        """Pick up a rotated token from the config file; the old one stays valid for the overlap."""
        if self.config_path is None:
            return
        while True:
            await asyncio.sleep(self.config.auth.reload_interval_seconds)
            try:
                fresh = load_fleet_config(self.config_path, SupervisorConfig)
            except ConfigError as exc:
                log.warning("config reload failed; keeping the current token: %s", exc.issues[0].render())
                continue
            await self._rotate_token(fresh)

    async def _rotate_token(self, fresh: SupervisorConfig) -> None:
        if fresh.auth.token and self.tokens.rotate(fresh.auth.token.get_secret_value()):
            log.info("fleet token rotated; the previous one is accepted for %.0fs", self.tokens.overlap)
            await self.audit.record(actor="supervisor", action="auth.rotate", target=None, args={},
                                    result="success")

    # ---- live reload (SIGHUP, --watch) -------------------------------------------------

    def request_reload(self, trigger: str) -> None:
        """Queue a reload (a signal handler or the watcher calls this); reloads run one at a time."""
        self._reload_requests.put_nowait(trigger)

    async def _reload_loop(self) -> None:
        while True:
            trigger = await self._reload_requests.get()
            try:
                await self.reload(trigger)
            except Exception:  # a reload must never stop the supervisor
                log.exception("config reload (%s) failed", trigger)
                self.reloads["failure"] += 1

    async def reload(self, trigger: str) -> bool:
        """Validate the config file again and apply what can change live. An invalid file changes
        nothing: the running config keeps serving and each error is logged with file:line key."""
        if self.config_path is None:
            log.warning("reload (%s) ignored: the supervisor was started without --config", trigger)
            return False
        digest = file_hash(self.config_path)
        try:
            fresh = load_fleet_config(self.config_path, SupervisorConfig)
        except ConfigError as exc:
            self.reloads["failure"] += 1
            self.reload_error = exc.render()
            for issue in exc.issues:
                log.error("config reload (%s) rejected, the running config stays: %s", trigger, issue.render())
            return False
        fresh = fresh.model_copy(update={"server": fresh.server.model_copy(update=self.server_overrides)})
        restart = needs_restart(self.config, fresh)
        if restart:
            log.warning("config reload (%s): needs a restart to take effect: %s", trigger, "; ".join(restart))
        fresh = fresh.model_copy(update={key: getattr(self.config, key) for key in RESTART_ONLY})
        changed = changed_keys(self.config, fresh)
        await self._apply(fresh)
        self.config, self.config_hash, self.reload_error = fresh, digest, None
        self.reloads["success"] += 1
        log.info("config reloaded (%s, hash %s): %s", trigger, digest, ", ".join(changed) or "no live changes")
        await self.audit.record(actor="supervisor", action="config.reload", target=str(self.config_path),
                                args={"trigger": trigger, "hash": digest, "changed": changed,
                                      "needs_restart": [r.split(" ")[0] for r in restart]}, result="success")
        return True

    async def _apply(self, fresh: SupervisorConfig) -> None:
        """Swap in the live-changeable parts; node connections, sockets and the store stay."""
        self.tokens.overlap = fresh.auth.rotation_overlap_seconds
        await self._rotate_token(fresh)
        self.hub.origins = fresh.origin_allowlist
        self.dispatcher.default_timeout = fresh.command_timeout_seconds
        self.dispatcher.idempotency_ttl = fresh.idempotency_ttl_seconds
        self.policies.config = fresh.policies
        prices = PricingTable(fresh.cost.pricing)
        self.pipeline.prices = prices
        self.cost.apply(fresh.cost, prices)
        self.alerter.apply(fresh.alerts)
        self.chatops.config = fresh.chatops
        self.audit.enabled = fresh.audit.enabled
        self.retention.apply(audit_days=fresh.audit.retention_days, event_days=fresh.event_retention_days,
                             interval=fresh.audit.purge_interval_seconds)

    async def _evict_finished(self) -> None:
        """Each stored batch of events also evicts; this covers a fleet that went quiet."""
        interval = min(60.0, max(1.0, self.config.sessions.finished_retention_seconds / 2))
        while True:
            await asyncio.sleep(interval)
            self.state.evict()

    async def stop(self) -> None:
        if self._http is not None:
            self._http.should_exit = True
        await self.hub.stop()
        await self.policies.stop()
        await self.pipeline.stop()
        for task in self._tasks:
            if task.get_name() != "fleet-http":
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.cost.stop()
        await self.alerter.stop()
        await self.retention.stop()
        await self.http_client.aclose()
        await self.store.close()


async def run_supervisor(sup: Supervisor, stop: asyncio.Event,
                         on_started: Callable[[], None] | None = None) -> None:
    await sup.start()
    if on_started is not None:
        on_started()
    try:
        await stop.wait()
    finally:
        await sup.stop()
