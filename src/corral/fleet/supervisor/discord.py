"""Discord's side of chat-ops: the application's Interactions Endpoint URL.

Discord signs each request with the application's Ed25519 key: ``X-Signature-Ed25519`` is
the hex signature of ``X-Signature-Timestamp`` followed by the raw body, checked against the
application's public key. A bad signature gets 401 (Discord probes for that when the URL is
saved). A PING (type 1) is answered with a PONG (type 1); an application command (type 2),
``/corral <subcommand> [options]``, with a CHANNEL_MESSAGE_WITH_SOURCE (type 4) whose data
has ``content`` and an embed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral.fleet.supervisor.api import DiscordInteraction, first_error
from corral.fleet.supervisor.chatops import ChatAnswer, ChatOps, ChatUser

log = logging.getLogger("corral.fleet.chatops.discord")
MAX_BODY = 64 * 1024
PING, APPLICATION_COMMAND = 1, 2
PONG, CHANNEL_MESSAGE_WITH_SOURCE = 1, 4
EPHEMERAL = 1 << 6
SUB_COMMAND = 1
GREEN, RED = 0x2EB67D, 0xE01E5A


def verify(public_key_hex: str, timestamp: str | None, signature_hex: str | None, body: bytes, *, now: float,
           window: float) -> str | None:
    """None when Discord signed the request, else the reason it is refused."""
    if not timestamp or not signature_hex:
        return "missing_signature"
    try:
        if abs(now - int(timestamp)) > window:
            return "stale_timestamp"
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
        key.verify(bytes.fromhex(signature_hex), timestamp.encode() + body)
    except (ValueError, InvalidSignature):
        return "bad_signature"
    return None


def command_line(data: dict[str, Any]) -> str:
    """``/corral prompt session:s-1 text:fix it`` -> ``prompt s-1 fix it``: a subcommand's name and
    its option values in order; without subcommands, the string options' values."""
    words: list[str] = []
    for option in data.get("options") or []:
        if option.get("type") == SUB_COMMAND:
            words.append(str(option.get("name", "")))
            words += [str(o.get("value", "")) for o in option.get("options") or []]
        elif "value" in option:
            words.append(str(option["value"]))
    return " ".join(w for w in words if w)


def user_of(interaction: DiscordInteraction) -> ChatUser:
    member = interaction.member or {}
    user = member.get("user") or interaction.user or {}
    return ChatUser("discord", str(user.get("id", "")), str(user.get("username", "")),
                    tuple(str(r) for r in member.get("roles") or []))


def reply(answer: ChatAnswer) -> dict[str, Any]:
    embed: dict[str, Any] = {"title": answer.title[:256], "color": GREEN if answer.ok else RED}
    if answer.lines:
        embed["description"] = "\n".join(answer.lines)[:4096]
    if answer.fields:
        embed["fields"] = [{"name": n[:256], "value": v[:1024] or "-", "inline": True} for n, v in answer.fields[:25]]
    data: dict[str, Any] = {"content": answer.title[:2000], "embeds": [embed], "allowed_mentions": {"parse": []}}
    if not answer.ok:
        data["flags"] = EPHEMERAL
    return {"type": CHANNEL_MESSAGE_WITH_SOURCE, "data": data}


class DiscordEndpoint:
    """``POST /chatops/discord``."""

    def __init__(self, chatops: ChatOps) -> None:
        self.chatops = chatops

    async def handle(self, request: Request) -> Response:
        config = self.chatops.config.discord
        if config is None:
            return JSONResponse({"error": "discord chat-ops is not configured"}, status_code=404)
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": "body too large"}, status_code=413)
        refused = verify(config.public_key, request.headers.get("x-signature-timestamp"),
                         request.headers.get("x-signature-ed25519"), body, now=time.time(),
                         window=self.chatops.config.replay_window_seconds)
        if refused:
            self.chatops.refused[("discord", refused)] += 1
            log.warning("discord request refused: %s (from %s)", refused,
                        request.client.host if request.client else "?")
            return JSONResponse({"error": refused}, status_code=401)
        try:
            interaction = DiscordInteraction.model_validate_json(body)
        except ValidationError as exc:
            return JSONResponse({"error": f"malformed interaction: {first_error(exc)}"}, status_code=400)
        if interaction.type == PING:
            return JSONResponse({"type": PONG})
        if interaction.type != APPLICATION_COMMAND:
            return JSONResponse({"error": f"interaction type {interaction.type} is not handled"}, status_code=400)
        user = user_of(interaction)
        text = command_line(interaction.data)
        request_id = interaction.id or hashlib.sha256(body).hexdigest()[:32]
        answer = await self.chatops.run(user, text, request_id=request_id)
        return JSONResponse(reply(answer))
