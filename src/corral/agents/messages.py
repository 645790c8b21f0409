"""Neutral messages to and from JSON, for sessions and run checkpoints in the store."""

from __future__ import annotations

from typing import Any

from corral.llm.types import ImagePart, Message, Part, TextPart, ToolCall


def message_to_json(message: Message) -> dict[str, Any]:
    data: dict[str, Any] = {"role": message.role, "content": [_part_json(p) for p in message.content]}
    if message.tool_calls:
        data["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in message.tool_calls]
    if message.tool_call_id:
        data["tool_call_id"] = message.tool_call_id
    if message.name:
        data["name"] = message.name
    return data


def message_from_json(data: dict[str, Any]) -> Message:
    content = data.get("content") or []
    if isinstance(content, str):
        parts: list[Part] = [TextPart(content)] if content else []
    else:
        parts = [_part_from(p) for p in content]
    calls = [ToolCall(c["id"], c["name"], c.get("arguments", "")) for c in data.get("tool_calls") or []]
    return Message(role=data["role"], content=parts, tool_calls=calls, tool_call_id=data.get("tool_call_id"),
                   name=data.get("name"))


def _part_json(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    return {"type": "image", "url": part.url, "detail": part.detail}


def _part_from(data: dict[str, Any]) -> Part:
    if data.get("type") == "image":
        return ImagePart(data["url"], data.get("detail"))
    return TextPart(str(data.get("text", "")))


def messages_to_json(messages: list[Message]) -> list[dict[str, Any]]:
    return [message_to_json(m) for m in messages]


def messages_from_json(data: list[dict[str, Any]]) -> list[Message]:
    return [message_from_json(m) for m in data]
