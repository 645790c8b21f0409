"""The gateway's console (`corral serve` at ``/ui/``): traffic charts, keys, models and
deployments, spend (with CSV), agents and runs (live), and the services `corral status`
probes. Built from the typed parts of a `Gateway`; `routes()` is added to the app's
route list by `corral.gateway.app.build_routes`.

The master key sees everything; a virtual key sees its own traffic, spend and runs."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute

from corral.agents.events import event_json
from corral.agents.messages import message_from_json
from corral.agents.service import RunNotFound
from corral.console.charts import Series, chart
from corral.console.web import (
    ConsoleSession,
    Forbidden,
    Identity,
    NavItem,
    SessionSigner,
    Site,
    csrf_checked,
    form_text,
    html_events,
    money,
    page_route,
    process_secret,
)
from corral.gateway.admin import KeyCreate, TeamCreate
from corral.gateway.auth import MASTER, Principal, display_prefix, generate_key, hash_key
from corral.gateway.call import caller_json, owner_of
from corral.gateway.errors import ApiError
from corral.gateway.runs import may_read
from corral.knowledge.types import KnowledgeError
from corral.llm.types import Message
from corral.store import AuditRecord, KeyRecord, RunRecord, TeamRecord
from corral.store.keys import new_id
from corral.store.usage import SpendRow, UsageBucket

if TYPE_CHECKING:
    from corral.gateway.app import Gateway

RANGES = {"1h": (timedelta(hours=1), 60), "24h": (timedelta(hours=24), 900), "7d": (timedelta(days=7), 7200)}
GROUPS = ("key", "model", "team", "agent", "day")
RUN_STATES = ("queued", "running", "input-required", "succeeded", "failed", "cancelled")


class OverheadSampler:
    """Corral's own overhead over time, from this process's ``corral_overhead_seconds``
    histogram: each sample (at most one per ``every`` seconds, taken while someone looks
    at the overview) is the mean overhead of the calls since the previous one."""

    def __init__(self, gateway: Gateway, *, every: float = 5.0, keep: int = 720) -> None:
        self.gateway = gateway
        self.every = every
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=keep)  # (time, sum, count)

    def sample(self, now: float | None = None) -> None:
        metrics = self.gateway.metrics
        now = time.time() if now is None else now
        if metrics is None or (self._samples and now - self._samples[-1][0] < self.every):
            return
        total = count = 0.0
        for family in metrics.registry.collect():
            if family.name == "corral_overhead_seconds":
                for s in family.samples:
                    if s.name.endswith("_sum"):
                        total += s.value
                    elif s.name.endswith("_count"):
                        count += s.value
        self._samples.append((now, total, count))

    def series(self, since: float) -> tuple[list[datetime], list[float | None]]:
        times: list[datetime] = []
        values: list[float | None] = []
        points = list(self._samples)
        for (_, s0, c0), (t1, s1, c1) in pairwise(points):
            if t1 >= since:
                times.append(datetime.fromtimestamp(t1, UTC))
                values.append((s1 - s0) / (c1 - c0) * 1000 if c1 > c0 else None)
        return times, values


class GatewayConsole:
    def __init__(self, gateway: Gateway, *, secret: bytes | None = None, live_seconds: float = 5.0) -> None:
        self.gateway = gateway
        self.live_seconds = live_seconds
        self.overhead = OverheadSampler(gateway)
        self.site = Site(
            title="Corral gateway", signer=SessionSigner(secret or process_secret()),
            sign_in=self.sign_in, still_valid=self.still_valid, secret_label="Master key or virtual key",
            nav=[NavItem("/ui/", "Overview"), NavItem("/ui/keys", "Keys", admin=True),
                 NavItem("/ui/models", "Models", admin=True), NavItem("/ui/spend", "Spend"),
                 NavItem("/ui/agents", "Agents"), NavItem("/ui/services", "Services", admin=True),
                 *([NavItem("/ui/knowledge", "Knowledge")] if gateway.knowledge is not None else [])])

    # ---- identity -------------------------------------------------------------------

    async def sign_in(self, secret: str) -> Identity | None:
        try:
            principal = await self.gateway.authenticator.authenticate_token(secret)
        except ApiError:
            return None
        if principal.is_admin:
            return Identity("master", "master", admin=True)
        if principal.kind == "key" and principal.key_id is not None:
            return Identity("key", principal.subject, admin=False, key_id=principal.key_id)
        return None  # JWTs and static keys: the console takes the keys it can check again later

    def still_valid(self, identity: Identity) -> bool:
        if identity.kind == "master":
            return self.gateway.authenticator.master_key is not None
        if identity.kind != "key" or identity.key_id is None or self.gateway.authenticator.keys is None:
            return False
        record = self.gateway.authenticator.keys.by_id(identity.key_id)
        return record is not None and not record.disabled and not record.expired(datetime.now(UTC))

    def principal(self, identity: Identity) -> Principal:
        if identity.admin:
            return MASTER
        assert identity.key_id is not None and self.gateway.authenticator.keys is not None
        cache = self.gateway.authenticator.keys
        record = cache.by_id(identity.key_id)
        if record is None:
            raise Forbidden("This key is no longer live.")
        return Principal(kind="key", subject=identity.subject, key_id=record.id, team_id=record.team_id,
                         models=record.models, key=record, team=cache.team(record.team_id))

    # ---- routes ---------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        page, site = self.site.page, self.site
        return [
            *site.routes(),
            page_route("/ui", _to_overview),
            page_route("/ui/", page(self.overview)),
            page_route("/ui/live/overview", page(self.overview_live)),
            page_route("/ui/keys", page(self.keys, admin=True)),
            page_route("/ui/keys", page(csrf_checked(site, self.create_key), admin=True), "POST"),
            page_route("/ui/keys/{key_id}/{action}", page(csrf_checked(site, self.key_action), admin=True),
                  "POST"),
            page_route("/ui/teams", page(csrf_checked(site, self.create_team), admin=True), "POST"),
            page_route("/ui/models", page(self.models, admin=True)),
            page_route("/ui/spend", page(self.spend)),
            page_route("/ui/spend.csv", page(self.spend_csv)),
            page_route("/ui/agents", page(self.agents)),
            page_route("/ui/agents/{name}/runs", page(csrf_checked(site, self.start_run)), "POST"),
            page_route("/ui/runs/{run_id}", page(self.run)),
            page_route("/ui/live/runs/{run_id}", page(self.run_live)),
            page_route("/ui/knowledge", page(self.knowledge)),
            page_route("/ui/services", page(self.services, admin=True)),
            page_route("/ui/live/services", page(self.services_live, admin=True)),
        ]

    # ---- overview -------------------------------------------------------------------

    def _range(self, request: Request) -> str:
        chosen = request.query_params.get("range", "1h")
        return chosen if chosen in RANGES else "1h"

    async def _charts(self, identity: Identity, range_name: str) -> dict[str, Any]:
        span, bucket = RANGES[range_name]
        now = datetime.now(UTC)
        since = datetime.fromtimestamp((now - span).timestamp() // bucket * bucket + bucket, UTC)
        buckets: list[UsageBucket] = await self.gateway.store.usage_series.buckets(
            since, bucket, key_id=None if identity.admin else identity.key_id, until=now)
        times = [b.start for b in buckets]
        charts = [
            chart("Requests and errors", times, [Series("requests", [b.requests for b in buckets], "s-req"),
                                                 Series("errors", [b.errors for b in buckets], "s-err")],
                  bars=True, chart_id="chart-requests"),
            chart("Latency", times, [Series("p50", [b.p50_ms for b in buckets], "s-p50"),
                                     Series("p99", [b.p99_ms for b in buckets], "s-p99")],
                  unit=" ms", chart_id="chart-latency"),
            chart("Spend", times, [Series("spend", [b.cost_usd for b in buckets], "s-cost")], unit="$", bars=True,
                  chart_id="chart-spend"),
        ]
        if identity.admin and self.gateway.metrics is not None:
            self.overhead.sample()
            o_times, o_values = self.overhead.series((now - span).timestamp())
            if len(o_times) >= 1:
                charts.append(chart("Corral overhead (this process, mean per sample)", o_times,
                                    [Series("overhead", o_values, "s-ovh")], unit=" ms", chart_id="chart-overhead"))
        requests = sum(b.requests for b in buckets)
        return {"charts": charts, "requests": requests, "errors": sum(b.errors for b in buckets),
                "spend": money(sum(b.cost_usd for b in buckets)), "range": range_name,
                "updated": now.strftime("%H:%M:%S UTC")}

    async def overview(self, request: Request, session: ConsoleSession) -> Response:
        range_name = self._range(request)
        data = await self._charts(session.identity, range_name)
        states = self.gateway.router.deployment_states() if session.identity.admin else []
        now = time.monotonic()
        cooling = sum(1 for s in states if s.cooling(now))
        return self.site.render(request, session, "gateway/overview.html", title="Overview", ranges=list(RANGES),
                                deployments=len(states), cooling=cooling, **data)

    async def overview_live(self, request: Request, session: ConsoleSession) -> Response:
        range_name = self._range(request)

        async def fragments() -> AsyncIterator[str]:
            while True:
                await asyncio.sleep(self.live_seconds)
                data = await self._charts(session.identity, range_name)
                yield self.site.fragment("gateway/_charts.html", **data)

        return html_events(fragments())

    # ---- keys -----------------------------------------------------------------------

    async def keys(self, request: Request, session: ConsoleSession, *, created: str | None = None,
                   created_id: str | None = None, status: int = 200, message: str | None = None) -> Response:
        store, limiter = self.gateway.store, self.gateway.limiter
        records = await store.keys.list(include_revoked=request.query_params.get("revoked") == "1")
        teams = await store.teams.list()
        rows = []
        for record in records:
            spent = await limiter.spend(record) if record.max_budget is not None else None
            share = min(100.0, spent / record.max_budget * 100) if spent is not None and record.max_budget else 0.0
            rows.append({"record": record, "spent": money(spent) if spent is not None else "—",
                         "budget": money(record.max_budget) if record.max_budget is not None else "no budget",
                         "share": share})
        audit = await store.audit.list(limit=20)
        return self.site.render(request, session, "gateway/keys.html", status=status, title="Keys", rows=rows,
                                teams=teams, models=sorted(self.gateway.config.models), created=created,
                                created_id=created_id, audit=audit, message=message)

    async def create_key(self, request: Request, session: ConsoleSession, form: FormData) -> Response:
        try:
            body = KeyCreate.model_validate({
                "name": form_text(form, "name") or None, "team_id": form_text(form, "team_id") or None,
                "models": [m for m in form.getlist("models") if isinstance(m, str) and m],
                "max_budget": float(form_text(form, "max_budget")) if form_text(form, "max_budget") else None,
                "budget_duration": form_text(form, "budget_duration") or None,
                "rpm": int(form_text(form, "rpm")) if form_text(form, "rpm") else None,
                "tpm": int(form_text(form, "tpm")) if form_text(form, "tpm") else None,
            })
        except (ValueError, ApiError) as exc:
            return await self.keys(request, session, status=400, message=f"The key was not created: {_first(exc)}")
        secret = generate_key()
        record = KeyRecord(id=new_id(), key_hash=hash_key(secret), key_prefix=display_prefix(secret),
                           name=body.name, team_id=body.team_id, models=tuple(body.models),
                           max_budget=body.max_budget, budget_duration=body.budget_duration, rpm=body.rpm,
                           tpm=body.tpm)
        await self.gateway.store.keys.create(record)
        await self.gateway.shared.keys.key_changed(record.id)
        await self._audit("key.create", record.id, {"name": record.name, "via": "console"})
        # The one page that shows the key: not stored, not logged, not cached (no-store).
        return await self.keys(request, session, created=secret, created_id=record.id, status=201)

    async def key_action(self, request: Request, session: ConsoleSession, form: FormData) -> Response:
        key_id, action = str(request.path_params["key_id"]), str(request.path_params["action"])
        store = self.gateway.store
        record: KeyRecord | None
        secret = None
        if action in ("disable", "enable"):
            current = await store.keys.get(key_id)
            if current is None or current.revoked:
                return await self.keys(request, session, status=404, message=f"No live key {key_id}.")
            record = await store.keys.update(key_id, {"disabled_at": datetime.now(UTC) if action == "disable"
                                                      else None})
        elif action == "rotate":
            secret = generate_key()
            record = await store.keys.rotate(key_id, key_hash=hash_key(secret), key_prefix=display_prefix(secret))
        elif action == "revoke":
            record = await store.keys.revoke(key_id)
        else:
            return await self.keys(request, session, status=404, message=f"Unknown action {action!r}.")
        if record is None:
            return await self.keys(request, session, status=404, message=f"No live key {key_id}.")
        await self.gateway.shared.keys.key_changed(record.id)
        await self._audit(f"key.{'update' if action in ('disable', 'enable') else action}", record.id,
                          {"disabled": action == "disable"} if action in ("disable", "enable") else {"via": "console"})
        if secret is not None:
            return await self.keys(request, session, created=secret, created_id=record.id)
        return RedirectResponse("/ui/keys", 303)

    async def create_team(self, request: Request, session: ConsoleSession, form: FormData) -> Response:
        try:
            body = TeamCreate.model_validate({
                "name": form_text(form, "name"),
                "max_budget": float(form_text(form, "max_budget")) if form_text(form, "max_budget") else None,
                "budget_duration": form_text(form, "budget_duration") or None})
        except ValueError as exc:
            return await self.keys(request, session, status=400, message=f"The team was not created: {_first(exc)}")
        if any(t.name == body.name for t in await self.gateway.store.teams.list()):
            return await self.keys(request, session, status=409, message=f"A team named {body.name!r} exists.")
        team = TeamRecord(id=new_id(), name=body.name, max_budget=body.max_budget,
                          budget_duration=body.budget_duration)
        await self.gateway.store.teams.create(team)
        self.gateway.shared.keys.keys.put_team(team)
        await self._audit("team.create", team.id, {"name": team.name, "via": "console"})
        return RedirectResponse("/ui/keys", 303)

    async def _audit(self, action: str, target: str, detail: dict[str, Any]) -> None:
        await self.gateway.writer.put(AuditRecord(actor="master", action=action, target=target, detail=detail))

    # ---- models ---------------------------------------------------------------------

    async def models(self, request: Request, session: ConsoleSession) -> Response:
        now = time.monotonic()
        rows = [{"alias": s.alias, "deployment": s.key, "healthy": not s.cooling(now),
                 "cooldown": max(0.0, s.cooldown_until - now), "in_flight": s.in_flight,
                 "latency": f"{s.latency * 1000:.0f} ms" if s.latency is not None else "—",
                 "successes": s.successes, "failures": s.failures, "fails": s.consecutive_fails}
                for s in self.gateway.router.deployment_states()]
        return self.site.render(request, session, "gateway/models.html", title="Models", rows=rows)

    # ---- spend ----------------------------------------------------------------------

    async def _spend(self, request: Request, identity: Identity) -> tuple[str, str, list[SpendRow]]:
        group = request.query_params.get("group_by", "model")
        group = group if group in GROUPS else "model"
        range_name = request.query_params.get("range", "7d")
        range_name = range_name if range_name in (*RANGES, "30d") else "7d"
        since = datetime.now(UTC) - (RANGES[range_name][0] if range_name in RANGES else timedelta(days=30))
        key_id = None if identity.admin else identity.key_id
        if group in ("key", "team") and not identity.admin:
            raise Forbidden("Spend by key or team needs the master key; yours is under 'model' or 'day'.")
        rows = await self.gateway.store.usage.spend(group, since=since, key_id=key_id)  # type: ignore[arg-type]
        return group, range_name, sorted(rows, key=lambda r: -r.cost_usd) if group != "day" else rows

    async def spend(self, request: Request, session: ConsoleSession) -> Response:
        group, range_name, rows = await self._spend(request, session.identity)
        names = {}
        if group == "key":
            names = {r.id: r.name or r.key_prefix for r in await self.gateway.store.keys.list(include_revoked=True)}
        elif group == "team":
            names = {t.id: t.name for t in await self.gateway.store.teams.list()}
        groups = [g for g in GROUPS if session.identity.admin or g not in ("key", "team")]
        return self.site.render(request, session, "gateway/spend.html", title="Spend", rows=rows, group=group,
                                groups=groups, range=range_name, ranges=[*RANGES, "30d"], names=names, money=money,
                                total=money(sum(r.cost_usd for r in rows)))

    async def spend_csv(self, request: Request, session: ConsoleSession) -> Response:
        group, range_name, rows = await self._spend(request, session.identity)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([group, "requests", "input_tokens", "output_tokens", "cost_usd"])
        for r in rows:
            writer.writerow([r.group or "", r.requests, r.input_tokens, r.output_tokens, f"{r.cost_usd:.10f}"])
        return Response(out.getvalue(), media_type="text/csv", headers={
            "content-disposition": f'attachment; filename="corral-spend-by-{group}-{range_name}.csv"',
            "cache-control": "no-store"})

    # ---- agents and runs --------------------------------------------------------------

    async def agents(self, request: Request, session: ConsoleSession) -> Response:
        principal = self.principal(session.identity)
        agents = []
        for agent in self.gateway.agents.registry.public():
            if not principal.may_use(agent.name):
                continue
            tools: list[str] = []
            for toolset in agent.toolsets:
                try:
                    async with asyncio.timeout(2):
                        tools += [f"{toolset.name}.{t.name}" for t in await toolset.list_tools()]
                except Exception:  # a remote toolset that does not answer: say so, show the rest
                    tools.append(f"{toolset.name} (unavailable)")
            agents.append({"name": agent.name, "description": agent.config.description, "model": agent.model,
                           "type": agent.config.type, "tools": tools})
        state = request.query_params.get("state") or None
        state = state if state in RUN_STATES else None
        runs = [r for r in await self.gateway.store.runs.list(state=state, limit=200) if may_read(principal, r)][:50]
        return self.site.render(request, session, "gateway/agents.html", title="Agents", agents=agents, runs=runs,
                                state=state, states=RUN_STATES, enabled=bool(self.gateway.config.agents))

    async def start_run(self, request: Request, session: ConsoleSession, form: FormData) -> Response:
        name = str(request.path_params["name"])
        agent = self.gateway.agents.registry.get(name)
        principal = self.principal(session.identity)
        if agent is None or agent.config.visibility != "public" or not principal.may_use(name):
            return self.site.error(request, session, 404, f"No agent {name!r}.")
        text = form_text(form, "input")
        if not text:
            return self.site.error(request, session, 400, "Give the run an input.")
        try:  # rate limits and budgets hold for runs started here too
            await self.gateway.limiter.check(principal, name)
        except ApiError as exc:
            return self.site.error(request, session, exc.status, f"Not started: {exc.message}")
        record, _ = await self.gateway.agents.service.start_run(
            name, [Message.text("user", text)], session_id=form_text(form, "session_id") or None,
            mode="foreground", owner=owner_of(principal), request_id=f"console-{new_id()}",
            caller=caller_json(principal, name))
        return RedirectResponse(f"/ui/runs/{record.id}", 303)

    async def _readable_run(self, request: Request, session: ConsoleSession) -> RunRecord:
        try:
            record = await self.gateway.agents.service.get(str(request.path_params["run_id"]))
        except RunNotFound:
            raise Forbidden("No such run.") from None
        if not may_read(self.principal(session.identity), record):
            raise Forbidden("No such run.")
        return record

    async def run(self, request: Request, session: ConsoleSession) -> Response:
        record = await self._readable_run(request, session)
        live = self.gateway.agents.service.live.get(record.id)
        events = [event_json(e) for e in live.events] if live is not None else []
        transcript: list[dict[str, Any]] = []
        if record.session_id:
            for m in await self.gateway.store.sessions.messages(record.session_id):
                transcript.append(_message_view(m.role, m.content))
        else:
            transcript = [_message_view(str(m.get("role", "user")), m) for m in record.input.get("messages", [])
                          if isinstance(m, dict)]
        output = record.output.get("output") if isinstance(record.output, dict) else None
        return self.site.render(request, session, "gateway/run.html", title=f"Run {record.id}", run=record,
                                events=events, live=live is not None and live.finished is None,
                                transcript=transcript, output=output)

    async def run_live(self, request: Request, session: ConsoleSession) -> Response:
        record = await self._readable_run(request, session)
        live = self.gateway.agents.service.live.get(record.id)
        skip = int(request.query_params.get("after", "0") or 0)

        async def fragments() -> AsyncIterator[str]:
            if live is None:
                return
            index = 0
            async for event in live.follow():
                index += 1
                if index > skip:
                    yield self.site.fragment("gateway/_event.html", event=event_json(event))

        return html_events(fragments())

    # ---- knowledge --------------------------------------------------------------------

    async def knowledge(self, request: Request, session: ConsoleSession) -> Response:
        """Bases with their counts, and a query box (a GET form: reading needs no CSRF token)."""
        service = self.gateway.knowledge
        if service is None:
            raise ApiError(404, "No knowledge base is configured", code="not_found")
        stats = await service.stats()
        bases = [s.to_dict() for s in stats]
        base = request.query_params.get("base") or (stats[0].name if stats else "")
        query = request.query_params.get("q", "").strip()
        results: list[dict[str, object]] = []
        problem = None
        if query and base:
            try:
                results = [h.to_dict() for h in await service.query(base, query, top_k=5)]
            except KnowledgeError as exc:
                problem = str(exc)
        return self.site.render(request, session, "gateway/knowledge.html", title="Knowledge", bases=bases,
                                base=base, query=query, results=results, problem=problem)

    # ---- services ---------------------------------------------------------------------

    async def _services(self) -> dict[str, Any]:
        from corral.boot.processes import ProcessTable
        from corral.boot.specs import ServiceSpecError, effective_services
        from corral.boot.status import check_services, probe_client
        from corral.store.engine import data_dir

        try:
            specs = effective_services(self.gateway.config, os.environ)
        except ServiceSpecError as exc:
            return {"checks": [], "problem": str(exc), "updated": _clock()}
        async with probe_client() as http:
            checks = await check_services(specs, http=http, processes=ProcessTable(data_dir() / "run"))
        return {"checks": [c.to_dict() for c in checks], "problem": None, "updated": _clock()}

    async def services(self, request: Request, session: ConsoleSession) -> Response:
        return self.site.render(request, session, "gateway/services.html", title="Services",
                                **await self._services())

    async def services_live(self, request: Request, session: ConsoleSession) -> Response:
        async def fragments() -> AsyncIterator[str]:
            while True:
                await asyncio.sleep(self.live_seconds)
                yield self.site.fragment("gateway/_services.html", **await self._services())

        return html_events(fragments())


async def _to_overview(_: Request) -> Response:
    return RedirectResponse("/ui/", 308)


def _clock() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S UTC")


def _first(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return str(exc)


def _message_view(role: str, content: dict[str, Any]) -> dict[str, Any]:
    try:
        message = message_from_json(content)
    except (KeyError, TypeError, AttributeError, ValueError):
        return {"role": role, "text": str(content.get("content", "")), "tool_calls": [], "tool_call_id": None}
    return {"role": role, "text": message.text_content,
            "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in message.tool_calls],
            "tool_call_id": message.tool_call_id}
