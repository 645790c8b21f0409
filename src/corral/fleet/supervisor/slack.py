"""Slack's side of chat-ops: slash commands (``/corral status``) and interactivity payloads.

Slack signs each request: ``X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret,
"v0:{X-Slack-Request-Timestamp}:{raw body}")>``. A request signed outside the replay
window (5 minutes by default) is refused like a bad signature. A slash command is answered
in the HTTP response (an ephemeral or in-channel message of Block Kit blocks); an
interactivity action (a button whose ``value`` is a command line) is answered by a POST to
its ``response_url``, as Slack expects.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs

import httpx
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral.fleet.supervisor.api import SlackInteractivity, SlackSlashCommand, first_error
from corral.fleet.supervisor.chatops import ChatAnswer, ChatOps, ChatUser

log = logging.getLogger("corral.fleet.chatops.slack")
MAX_BODY = 64 * 1024
SECTION_LIMIT = 3000  # characters of mrkdwn in one section block


def signature(secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: str | None, presented: str | None, body: bytes, *, now: float,
           window: float) -> str | None:
    """None when the request is Slack's, else the reason it is refused."""
    if not timestamp or not presented:
        return "missing_signature"
    try:
        age = abs(now - int(timestamp))
    except ValueError:
        return "bad_timestamp"
    if age > window:
        return "stale_timestamp"
    if not hmac.compare_digest(signature(secret, timestamp, body).encode(), presented.encode()):
        return "bad_signature"
    return None


def mrkdwn(text: str) -> str:
    """Slack's three control characters; backticks stay (code spans)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def message(answer: ChatAnswer) -> dict[str, Any]:
    """A slash-command reply: ``response_type`` plus Block Kit blocks, with ``text`` as the fallback."""
    title = {"type": "mrkdwn", "text": f"*{mrkdwn(answer.title)}*"}
    blocks: list[dict[str, Any]] = [{"type": "section", "text": title}]
    if answer.fields:
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*{mrkdwn(name)}*\n{mrkdwn(value)}"} for name, value in answer.fields[:10]]})
    if answer.lines:
        body = "\n".join(f"• {mrkdwn(line)}" for line in answer.lines)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": body[:SECTION_LIMIT]}})
    return {"response_type": "in_channel" if answer.ok else "ephemeral", "text": answer.title, "blocks": blocks}


class SlackEndpoint:
    """``POST /chatops/slack``: Slack's Request URL for both the slash command and interactivity."""

    def __init__(self, chatops: ChatOps, client: httpx.AsyncClient) -> None:
        self.chatops, self.client = chatops, client

    async def handle(self, request: Request) -> Response:
        config = self.chatops.config.slack
        if config is None:
            return JSONResponse({"error": "slack chat-ops is not configured"}, status_code=404)
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": "body too large"}, status_code=413)
        refused = verify(config.signing_secret.get_secret_value(), request.headers.get("x-slack-request-timestamp"),
                         request.headers.get("x-slack-signature"), body, now=time.time(),
                         window=self.chatops.config.replay_window_seconds)
        if refused:
            self.chatops.refused[("slack", refused)] += 1
            log.warning("slack request refused: %s (from %s)", refused, request.client.host if request.client else "?")
            return JSONResponse({"error": refused}, status_code=401)
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        try:
            if "payload" in form:
                return await self._interaction(SlackInteractivity.model_validate(form).payload)
            command = SlackSlashCommand.model_validate(form)
        except ValidationError as exc:
            return JSONResponse({"response_type": "ephemeral", "text": f"not a Slack command: {first_error(exc)}"},
                                status_code=400)
        user = ChatUser("slack", command.user_id, command.user_name)
        request_id = command.trigger_id or hashlib.sha256(body).hexdigest()[:32]
        answer = await self.chatops.run(user, command.text, request_id=request_id)
        return JSONResponse(message(answer))

    async def _interaction(self, raw: str) -> Response:
        try:
            payload = json.loads(raw)
            user = ChatUser("slack", str(payload["user"]["id"]), str(payload["user"].get("username", "")))
            actions = payload.get("actions") or []
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "malformed interactivity payload"}, status_code=400)
        url = payload.get("response_url")
        prefixes = self.chatops.config.slack.response_url_prefixes if self.chatops.config.slack else []
        for action in actions[:1]:  # one button press is one action
            answer = await self.chatops.run(user, str(action.get("value", "")),
                                            request_id=str(action.get("action_ts") or payload.get("trigger_id")))
            if not (isinstance(url, str) and any(url.startswith(p) for p in prefixes)):
                log.warning("slack interactivity: response_url missing or not under response_url_prefixes")
                continue
            try:
                await self.client.post(url, json={**message(answer), "replace_original": False}, timeout=10)
            except httpx.HTTPError as exc:
                log.warning("slack response_url post failed: %s", type(exc).__name__)
        return Response(status_code=200)
