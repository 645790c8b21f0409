"""`corral ctl`: the fleet supervisor's command-line client (its HTTP API)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

TOKEN_ENV = "CORRAL_FLEET_TOKEN"
URL_ENV = "CORRAL_FLEET_URL"
DEFAULT_URL = "http://127.0.0.1:8421"


def user_config_file() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir("corral", appauthor=False)) / "ctl.json"


@dataclass
class Client:
    url: str
    token: str | None
    fmt: str

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             params: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = httpx.request(method, f"{self.url.rstrip('/')}{path}", json=body, headers=headers,
                                     params={k: v for k, v in (params or {}).items() if v is not None},
                                     timeout=timeout)
        except httpx.HTTPError as exc:
            raise _fail(f"cannot reach the supervisor at {self.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code == 401:
            hint = "" if self.token else f" (no token: use --token, ${TOKEN_ENV} or {user_config_file()})"
            raise _fail(f"the supervisor at {self.url} rejected the token (HTTP 401){hint}")
        try:
            payload = response.json()
        except ValueError:
            raise _fail(f"unexpected answer from {self.url}: HTTP {response.status_code}") from None
        if response.status_code >= 400:
            error = payload.get("error", {}) if isinstance(payload, dict) else {}
            raise _fail(f"error {response.status_code} {error.get('code', '')}: {error.get('message', payload)}")
        return payload.get("data") if isinstance(payload, dict) else payload


def _fail(message: str) -> typer.Exit:
    typer.secho(f"corral ctl: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def _cell(value: Any) -> str:
    if isinstance(value, float) and value > 1e9:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | dict):
        return json.dumps(value)[:60]
    return "" if value is None else str(value)


def emit(client: Client, data: Any, columns: list[str]) -> None:
    if client.fmt == "json":
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    rows = data if isinstance(data, list) else [data]
    if not rows:
        typer.echo("(none)")
        return
    table = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(columns)]
    typer.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in table:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _settings() -> dict[str, Any]:
    path = user_config_file()
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _fail(f"cannot read {path}: {exc}") from None
    return data if isinstance(data, dict) else {}


NODE_COLS = ["node_id", "status", "hostname", "version", "projects", "backends", "last_seen"]
SESSION_COLS = ["session_id", "node_id", "project", "state", "model", "input_tokens", "output_tokens", "cost_usd"]
COMMAND_COLS = ["command_id", "type", "node_id", "status", "error", "output"]


def _command(ctx: typer.Context, kind: str, target: dict[str, Any], args: dict[str, Any],
             timeout: float | None, key: str | None) -> None:
    client: Client = ctx.obj
    body = {"type": kind, "target": target, "args": args, "timeout": timeout, "idempotency_key": key,
            "actor": "ctl"}
    row = client.call("POST", "/api/v1/commands", body, timeout=(timeout or 30) + 10)
    emit(client, row, COMMAND_COLS)
    if row.get("status") != "success":
        raise typer.Exit(2)


def _nodes(app: typer.Typer) -> None:
    nodes = typer.Typer(help="Nodes known to the supervisor.", no_args_is_help=True)

    @nodes.command("list", help="List nodes and whether they are online.")
    def nodes_list(ctx: typer.Context, status: str | None = typer.Option(None, help="online or offline")) -> None:
        emit(ctx.obj, ctx.obj.call("GET", "/api/v1/nodes", params={"status": status}), NODE_COLS)

    @nodes.command("get", help="Show one node and its sessions.")
    def nodes_get(ctx: typer.Context, node_id: str) -> None:
        emit(ctx.obj, ctx.obj.call("GET", f"/api/v1/nodes/{node_id}"), NODE_COLS)

    app.add_typer(nodes, name="nodes")


def _sessions(app: typer.Typer) -> None:
    s = typer.Typer(help="Sessions across all nodes.", no_args_is_help=True)
    timeout_opt = typer.Option(None, "--timeout", help="Seconds to wait for the node's answer.")
    key_opt = typer.Option(None, "--idempotency-key", help="Repeat-safe key for this command.")
    wait_opt = typer.Option(False, "--wait", help="Wait for the turn to finish and show the reply.")

    @s.command("list", help="List sessions across all nodes.")
    def sessions_list(ctx: typer.Context, node: str | None = typer.Option(None, "--node"),
                      project: str | None = typer.Option(None, "--project"),
                      state: str | None = typer.Option(None, "--state")) -> None:
        data = ctx.obj.call("GET", "/api/v1/sessions", params={"node_id": node, "project": project, "state": state})
        emit(ctx.obj, data, SESSION_COLS)

    @s.command("get", help="Show one session.")
    def sessions_get(ctx: typer.Context, session_id: str) -> None:
        emit(ctx.obj, ctx.obj.call("GET", f"/api/v1/sessions/{session_id}"), SESSION_COLS)

    @s.command("start", help="Start a session in a project (optionally with a first prompt).")
    def sessions_start(ctx: typer.Context, project: str = typer.Option(..., "--project"),
                       prompt: str | None = typer.Option(None, "--prompt"),
                       node: str | None = typer.Option(None, "--node", help="Run on this node."),
                       wait: bool = wait_opt, timeout: float | None = timeout_opt, key: str | None = key_opt) -> None:
        target = {"node_id": node} if node else {"project": project}
        _command(ctx, "start", target, {"project": project, "prompt": prompt, "wait": wait}, timeout, key)

    @s.command("prompt", help="Send a prompt to a session.")
    def sessions_prompt(ctx: typer.Context, session_id: str, message: str, wait: bool = wait_opt,
                        timeout: float | None = timeout_opt, key: str | None = key_opt) -> None:
        _command(ctx, "prompt", {"session_id": session_id}, {"message": message, "wait": wait}, timeout, key)

    @s.command("resume", help="Resume a session (prompts 'continue' or --message).")
    def sessions_resume(ctx: typer.Context, session_id: str, message: str | None = typer.Option(None, "--message"),
                        wait: bool = wait_opt, timeout: float | None = timeout_opt, key: str | None = key_opt) -> None:
        _command(ctx, "resume", {"session_id": session_id}, {"message": message, "wait": wait}, timeout, key)

    @s.command("restart", help="Replace a session with a new one running its last prompt.")
    def sessions_restart(ctx: typer.Context, session_id: str, timeout: float | None = timeout_opt,
                         key: str | None = key_opt) -> None:
        _command(ctx, "restart", {"session_id": session_id}, {}, timeout, key)

    @s.command("kill", help="Stop a session.")
    def sessions_kill(ctx: typer.Context, session_id: str, timeout: float | None = timeout_opt,
                      key: str | None = key_opt) -> None:
        _command(ctx, "kill", {"session_id": session_id}, {}, timeout, key)

    app.add_typer(s, name="sessions")


def _rest(app: typer.Typer) -> None:
    cost = typer.Typer(help="Cost reports.", no_args_is_help=True)
    for period in ("today", "week", "month"):
        def report(ctx: typer.Context, _period: str = period) -> None:
            data = ctx.obj.call("GET", f"/api/v1/cost/{_period}")
            if ctx.obj.fmt == "json":
                emit(ctx.obj, data, [])
                return
            degraded = "  (provider usage API degraded)" if data["degraded"] else ""
            typer.echo(f"{_period}: {data['total_cost_usd']:.6f} USD, {data['input_tokens']} in / "
                       f"{data['output_tokens']} out tokens{degraded}")
            rows = [{"by": key, "name": name, **v} for key in ("by_node", "by_project", "by_model", "by_session")
                    for name, v in data[key].items()]
            emit(ctx.obj, rows, ["by", "name", "cost_usd", "tokens"])
        cost.command(period, help=f"Cost for {period}.")(report)
    app.add_typer(cost, name="cost")

    events = typer.Typer(help="Stored fleet events.", no_args_is_help=True)

    @events.command("tail", help="Show recent events; --follow to keep watching.")
    def events_tail(ctx: typer.Context, session: str | None = typer.Option(None, "--session"),
                    node: str | None = typer.Option(None, "--node"), kind: str | None = typer.Option(None, "--type"),
                    limit: int = typer.Option(20, "--limit"), follow: bool = typer.Option(False, "--follow", "-f"),
                    seconds: float | None = typer.Option(None, "--for", help="Stop following after N seconds."),
                    ) -> None:
        params: dict[str, Any] = {"session_id": session, "node_id": node, "type": kind, "limit": 1000}
        rows = ctx.obj.call("GET", "/api/v1/events", params=params)
        after = rows[-1]["id"] if rows else 0
        emit(ctx.obj, rows[-limit:], ["id", "ts", "node_id", "seq", "type", "session_id"])
        end = time.monotonic() + seconds if seconds else None
        while follow and (end is None or time.monotonic() < end):
            time.sleep(1.0)
            rows = ctx.obj.call("GET", "/api/v1/events", params={**params, "after": after})
            if rows:
                after = rows[-1]["id"]
                emit(ctx.obj, rows, ["id", "ts", "node_id", "seq", "type", "session_id"])
    app.add_typer(events, name="events")

    audit = typer.Typer(help="The audit log.", no_args_is_help=True)

    @audit.command("list", help="Show the audit log, newest first.")
    def audit_list(ctx: typer.Context, limit: int = typer.Option(50, "--limit"),
                   action: str | None = typer.Option(None, "--action")) -> None:
        data = ctx.obj.call("GET", "/api/v1/audit", params={"limit": limit, "action": action})
        emit(ctx.obj, data, ["id", "ts", "actor", "action", "target", "result", "error", "source"])
    app.add_typer(audit, name="audit")


def build_ctl() -> typer.Typer:
    ctl = typer.Typer(help="Talk to a fleet supervisor's HTTP API.", no_args_is_help=True)

    @ctl.callback()
    def _options(
        ctx: typer.Context,
        supervisor_url: str | None = typer.Option(None, "--supervisor-url",
                                                  help=f"HTTP API URL (or ${URL_ENV}; default {DEFAULT_URL})."),
        token: str | None = typer.Option(None, "--token", help=f"Fleet token (or ${TOKEN_ENV}).", show_default=False),
        fmt: str = typer.Option("table", "--format", help="table or json."),
    ) -> None:
        if fmt not in ("table", "json"):
            raise _fail("--format must be table or json")
        settings = _settings()
        url = supervisor_url or os.environ.get(URL_ENV) or settings.get("supervisor_url") or DEFAULT_URL
        if url.startswith(("ws://", "wss://")):
            raise _fail(f"{url} is the node WebSocket; ctl talks to the HTTP API (port 8421 by default)")
        ctx.obj = Client(url=url, token=token or os.environ.get(TOKEN_ENV) or settings.get("token"), fmt=fmt)

    _nodes(ctl)
    _sessions(ctl)
    _rest(ctl)
    return ctl


def register(app: typer.Typer) -> None:
    app.add_typer(build_ctl(), name="ctl")
