"""Chat-ops against a real supervisor (its HTTP app) and a real node connected over WebSocket.

Requests are signed the way Slack and Discord document it: Slack's ``v0=`` HMAC-SHA256 over
``v0:{timestamp}:{body}`` with the signing secret; Discord's Ed25519 signature over
timestamp + body with the application's key (generated here).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from corral.fleet.supervisor.http import build_http_app
from corral.fleet.testing import wait_until

from .conftest import Fleet

SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
OPERATOR, VIEWER, STRANGER = "U0OPS", "U0VIEW", "U0NOBODY"
DISCORD_OPS_ROLE, DISCORD_VIEWER = "1100000000000000001", "2200000000000000002"


class Chat:
    def __init__(self, app: Any, key: Ed25519PrivateKey) -> None:
        self.key = key
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fleet", timeout=10)
        self.count = 0

    async def slack(self, user_id: str, text: str, *, ts: int | None = None, secret: str = SLACK_SECRET,
                    user_name: str = "alice") -> httpx.Response:
        self.count += 1
        body = urlencode({
            "token": "deprecated-verification-token", "team_id": "T0001", "team_domain": "example",
            "channel_id": "C2147483705", "channel_name": "ops", "user_id": user_id, "user_name": user_name,
            "command": "/corral", "text": text, "api_app_id": "A123456",
            "response_url": "https://hooks.slack.com/commands/1234/5678", "trigger_id": f"13345224609.{self.count}",
        }).encode()
        return await self.http.post("/chatops/slack", content=body, headers=slack_headers(body, ts, secret))

    async def discord(self, interaction: dict[str, Any], *, ts: int | None = None,
                      key: Ed25519PrivateKey | None = None) -> httpx.Response:
        body = json.dumps(interaction).encode()
        stamp = str(int(time.time()) if ts is None else ts)
        signature = (key or self.key).sign(stamp.encode() + body).hex()
        return await self.http.post("/chatops/discord", content=body, headers={
            "content-type": "application/json", "x-signature-ed25519": signature, "x-signature-timestamp": stamp})


def slack_headers(body: bytes, ts: int | None = None, secret: str = SLACK_SECRET) -> dict[str, str]:
    stamp = str(int(time.time()) if ts is None else ts)
    digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {"content-type": "application/x-www-form-urlencoded", "x-slack-request-timestamp": stamp,
            "x-slack-signature": f"v0={digest}"}


def command(name: str, *values: str, user: str = "9000", roles: tuple[str, ...] = ()) -> dict[str, Any]:
    """An APPLICATION_COMMAND interaction for ``/corral <name> ...`` as a guild member sends it."""
    option_names = {"prompt": ["session", "text"], "kill": ["session"], "cost": ["period"]}.get(name, [])
    options = [{"type": 3, "name": n, "value": v} for n, v in zip(option_names, values, strict=False)]
    return {"type": 2, "id": f"12{time.monotonic_ns()}", "application_id": "77", "token": "interaction-token",
            "version": 1, "data": {"id": "88", "name": "corral", "type": 1,
                                   "options": [{"type": 1, "name": name, "options": options}]},
            "member": {"user": {"id": user, "username": "bob"}, "roles": list(roles)}, "guild_id": "55"}


@pytest.fixture
async def chat(fleet: Fleet) -> Any:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    sup = await fleet.start_supervisor(chatops={
        "slack": {"signing_secret": SLACK_SECRET, "response_url_prefixes": ["http://127.0.0.1:"]},
        "discord": {"public_key": public},
        "roles": {"operator": {"slack_users": [OPERATOR], "discord_roles": [DISCORD_OPS_ROLE]},
                  "viewer": {"slack_users": [VIEWER], "discord_users": [DISCORD_VIEWER]}},
    })
    await fleet.start_node("n1")
    client = Chat(build_http_app(sup), key)
    yield client
    await client.http.aclose()


async def _session(fleet: Fleet) -> str:
    started = await fleet.command("start", {"project": "demo"}, {"project": "demo", "prompt": "hi", "wait": True})
    sid: str = started["output"]["session_id"]
    assert fleet.sup is not None
    sessions = fleet.sup.state.sessions
    await wait_until(lambda: sid in sessions and sessions[sid].state == "idle" and sessions[sid].project == "demo"
                     and sessions[sid].total_tokens > 0, 5, "the first turn's events stored")
    return sid


async def _audit(fleet: Fleet) -> list[dict[str, Any]]:
    assert fleet.api is not None
    rows: list[dict[str, Any]] = (await fleet.api.get("/api/v1/audit")).json()["data"]
    return rows


async def test_slack_slash_commands_drive_the_fleet_and_are_audited(fleet: Fleet, chat: Chat) -> None:
    sid = await _session(fleet)
    status = await chat.slack(VIEWER, "status")
    assert status.status_code == 200
    reply = status.json()
    assert reply["response_type"] == "in_channel" and reply["text"] == "Fleet status"
    assert reply["blocks"][0] == {"type": "section", "text": {"type": "mrkdwn", "text": "*Fleet status*"}}
    assert {"type": "mrkdwn", "text": "*nodes*\n1 online, 0 offline"} in reply["blocks"][1]["fields"]

    listed = (await chat.slack(VIEWER, "sessions")).json()
    assert listed["text"] == "1 active sessions" and f"• `{sid}` idle on n1 (demo)" in listed["blocks"][-1]["text"]["text"]

    prompted = (await chat.slack(OPERATOR, f"prompt {sid} hello from slack")).json()
    assert prompted["text"] == f"`prompt` {sid}: success"
    assert fleet.api is not None

    async def replied() -> bool:
        events = (await fleet.api.get("/api/v1/events", params={"session_id": sid, "type": "session.message"})).json()  # type: ignore[union-attr]
        return any(e["data"].get("text") == "You said: hello from slack" for e in events["data"])

    await wait_until(replied, 5, "the node ran the prompt typed in Slack")

    killed = (await chat.slack(OPERATOR, f"kill {sid}")).json()
    assert killed["text"] == f"`kill` {sid}: success"
    assert fleet.sup is not None
    sessions = fleet.sup.state.sessions
    await wait_until(lambda: sessions[sid].state == "completed", 5, "the session.killed event stored")

    cost = (await chat.slack(VIEWER, "cost week")).json()
    assert cost["text"].startswith("Cost (week): $") and "`scripted`" in cost["blocks"][-1]["text"]["text"]

    audit = await _audit(fleet)
    mine = [(a["actor"], a["action"], a["result"]) for a in audit if a["source"] == "slack"]
    assert mine[:5] == [("slack:U0VIEW (alice)", "chatops.cost", "success"),
                        ("slack:U0OPS (alice)", "chatops.kill", "success"),
                        ("slack:U0OPS (alice)", "command.kill", "success"),
                        ("slack:U0OPS (alice)", "chatops.prompt", "success"),
                        ("slack:U0OPS (alice)", "command.prompt", "success")]


async def test_slack_refuses_bad_signatures_old_timestamps_and_unlisted_users(fleet: Fleet, chat: Chat) -> None:
    sid = await _session(fleet)
    bad = await chat.slack(OPERATOR, f"kill {sid}", secret="not-the-signing-secret")
    assert bad.status_code == 401 and bad.json() == {"error": "bad_signature"}
    old = await chat.slack(OPERATOR, f"kill {sid}", ts=int(time.time()) - 301)
    assert old.status_code == 401 and old.json() == {"error": "stale_timestamp"}
    unsigned = await chat.http.post("/chatops/slack", content=b"user_id=U0OPS&text=status")
    assert unsigned.status_code == 401

    stranger = (await chat.slack(STRANGER, "status")).json()
    assert stranger["response_type"] == "ephemeral" and stranger["text"].startswith("Not allowed: `status`")
    viewer_kill = (await chat.slack(VIEWER, f"kill {sid}")).json()
    assert viewer_kill["text"] == "Not allowed: `kill` needs one of the roles operator"
    assert fleet.sup is not None and fleet.sup.state.sessions[sid].state != "completed"

    audit = await _audit(fleet)
    denied = [(a["actor"], a["action"], a["target"]) for a in audit if a["result"] == "denied"]
    assert denied == [("slack:U0VIEW (alice)", "chatops.kill", sid), ("slack:U0NOBODY (alice)", "chatops.status", None)]
    assert not [a for a in audit if a["action"] == "command.kill"]
    metrics = (await chat.http.get("/metrics")).text
    assert 'corral_fleet_chatops_refused_total{platform="slack",reason="bad_signature"} 1.0' in metrics
    assert 'corral_fleet_chatops_refused_total{platform="slack",reason="stale_timestamp"} 1.0' in metrics
    assert 'corral_fleet_chatops_refused_total{platform="slack",reason="not_allowed"} 2.0' in metrics


async def test_slack_interactivity_answers_on_the_response_url(fleet: Fleet, chat: Chat) -> None:
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        await received.put(await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        payload = {"type": "block_actions", "user": {"id": VIEWER, "username": "carol"}, "trigger_id": "1.2.3",
                   "response_url": f"http://127.0.0.1:{port}/actions/T0001/1/abc",
                   "actions": [{"action_id": "nodes", "value": "nodes", "type": "button", "action_ts": "1700.1"}]}
        body = urlencode({"payload": json.dumps(payload)}).encode()
        response = await chat.http.post("/chatops/slack", content=body, headers=slack_headers(body))
        assert response.status_code == 200
        posted = json.loads(await asyncio.wait_for(received.get(), 5))
        assert posted["text"] == "1 nodes" and posted["replace_original"] is False
        assert posted["blocks"][-1]["text"]["text"].startswith("• `n1` online, 0 sessions, projects: demo")
    finally:
        server.close()
        await server.wait_closed()


async def test_discord_ping_commands_and_refusals(fleet: Fleet, chat: Chat) -> None:
    sid = await _session(fleet)
    pong = await chat.discord({"type": 1, "id": "1", "application_id": "77", "token": "t", "version": 1})
    assert pong.status_code == 200 and pong.json() == {"type": 1}

    nodes = (await chat.discord(command("nodes", user=DISCORD_VIEWER))).json()
    assert nodes["type"] == 4
    embed = nodes["data"]["embeds"][0]
    assert nodes["data"]["content"] == "1 nodes" and embed["title"] == "1 nodes" and "flags" not in nodes["data"]
    assert embed["description"].startswith("`n1` online, 1 sessions, projects: demo")

    prompted = (await chat.discord(command("prompt", sid, "from discord", roles=(DISCORD_OPS_ROLE,)))).json()
    assert prompted["data"]["content"] == f"`prompt` {sid}: success"
    assert {"name": "node", "value": "n1", "inline": True} in prompted["data"]["embeds"][0]["fields"]

    refused = (await chat.discord(command("kill", sid, user=DISCORD_VIEWER))).json()
    assert refused["type"] == 4 and refused["data"]["flags"] == 64
    assert refused["data"]["content"] == "Not allowed: `kill` needs one of the roles operator"

    other_key = Ed25519PrivateKey.generate()
    forged = await chat.discord(command("kill", sid, roles=(DISCORD_OPS_ROLE,)), key=other_key)
    assert forged.status_code == 401
    stale = await chat.discord(command("kill", sid, roles=(DISCORD_OPS_ROLE,)), ts=int(time.time()) - 600)
    assert stale.status_code == 401 and stale.json() == {"error": "stale_timestamp"}
    assert fleet.sup is not None and fleet.sup.state.sessions[sid].state != "completed"

    audit = await _audit(fleet)
    actions = [(a["actor"], a["action"], a["result"]) for a in audit if a["source"] == "discord"]
    assert actions == [(f"discord:{DISCORD_VIEWER} (bob)", "chatops.kill", "denied"),
                       ("discord:9000 (bob)", "chatops.prompt", "success"),
                       ("discord:9000 (bob)", "command.prompt", "success"),
                       (f"discord:{DISCORD_VIEWER} (bob)", "chatops.nodes", "success")]


async def test_secrets_never_reach_logs_or_audit(fleet: Fleet, chat: Chat, caplog: pytest.LogCaptureFixture) -> None:
    await chat.slack(OPERATOR, "status", secret="wrong")
    await chat.slack(OPERATOR, "status")
    assert SLACK_SECRET not in caplog.text
    assert all(SLACK_SECRET not in json.dumps(a) for a in await _audit(fleet))
