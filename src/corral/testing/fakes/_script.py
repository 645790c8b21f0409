"""What a fake upstream is told to answer, and what it saw."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from dataclasses import dataclass, field
from typing import Any

ECHO_PREFIX = "You said: "


@dataclass(slots=True)
class ReplyToolCall:
    """A tool call the fake model makes. ``arguments`` is an object or JSON text;
    ``id`` defaults to a vendor-style id (Gemini sends none unless given)."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None
    signature: str | None = None  # Gemini's thoughtSignature on the call's part

    @property
    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)

    @property
    def arguments_object(self) -> Any:
        return json.loads(self.arguments) if isinstance(self.arguments, str) else self.arguments


@dataclass(slots=True)
class Reply:
    """One scripted answer. Every field is optional: ``Reply()`` echoes the last user
    message as ``You said: <text>``.

    Token counts: ``input_tokens`` is the whole prompt, cached tokens included (each
    fake renders it in its vendor's convention); left as None they are counted as
    whitespace-separated words.

    Failure modes: ``status`` >= 400 answers the vendor's error body (``error_message``,
    ``error_type``, or a whole ``error_body``); ``headers`` are sent with any answer
    (``retry-after``); ``delay`` waits before answering, ``chunk_delay`` between stream
    events; ``raw_body`` answers those bytes instead of JSON (a garbage body);
    ``truncate`` cuts a JSON body in half or ends a stream cleanly before its final
    events; ``drop`` aborts the connection mid-stream (or mid-body); with
    ``mid_stream_error`` an error status is sent to stream requests as HTTP 200, the
    content, then the vendor's in-stream error event (Anthropic's ``event: error``).
    """

    text: str | None = None
    tool_calls: list[ReplyToolCall] = field(default_factory=list)
    reasoning: str | None = None
    finish_reason: str | None = None  # neutral: stop | length | tool_calls | content_filter
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    model: str | None = None
    status: int = 200
    error_message: str | None = None
    error_type: str | None = None
    error_body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    chunk_delay: float = 0.0
    chunk_chars: int | None = None  # stream text in pieces of this many characters (default: per word)
    raw_body: bytes | None = None
    content_type: str = "text/html; charset=utf-8"
    truncate: bool = False
    drop: bool = False
    mid_stream_error: bool = False

    @classmethod
    def tools(cls, *calls: ReplyToolCall | tuple[str, dict[str, Any]], **kw: Any) -> Reply:
        made = [c if isinstance(c, ReplyToolCall) else ReplyToolCall(c[0], c[1]) for c in calls]
        return cls(tool_calls=made, **kw)

    @classmethod
    def error(
        cls,
        status: int,
        message: str = "",
        *,
        type: str | None = None,  # the vendor's field name
        headers: dict[str, str] | None = None,
        retry_after: float | None = None,
        **kw: Any,
    ) -> Reply:
        all_headers = dict(headers or {})
        if retry_after is not None:
            all_headers["retry-after"] = f"{retry_after:g}"
        return cls(status=status, error_message=message or None, error_type=type, headers=all_headers, **kw)

    @classmethod
    def garbage(cls, body: bytes = b"<html><body><h1>502 Bad Gateway</h1></body></html>", status: int = 200) -> Reply:
        return cls(raw_body=body, status=status)

    def resolved_text(self, last_user_text: str) -> str:
        if self.text is not None:
            return self.text
        return "" if self.tool_calls else f"{ECHO_PREFIX}{last_user_text}"

    def neutral_finish(self) -> str:
        return self.finish_reason or ("tool_calls" if self.tool_calls else "stop")

    def counts(self, prompt_text: str, text: str) -> tuple[int, int]:
        produced = " ".join([text, *(c.arguments_json for c in self.tool_calls), self.reasoning or ""])
        input_tokens = self.input_tokens if self.input_tokens is not None else count_tokens(prompt_text)
        output_tokens = self.output_tokens if self.output_tokens is not None else count_tokens(produced)
        return input_tokens, output_tokens


@dataclass(slots=True)
class RecordedRequest:
    """A request a fake received: headers are lower-cased, ``body`` is the parsed JSON."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    client_port: int | None = None  # equal ports mean one reused connection


def count_tokens(text: str) -> int:
    """The fake vendor's own "tokenizer": whitespace words. Deliberately not Corral's
    estimate (`corral.llm.tokens`), so a test sees whether Corral reports the upstream's
    count or one it made up."""
    return max(1, len(text.split())) if text else 0


def text_pieces(text: str, chunk_chars: int | None) -> list[str]:
    if not text:
        return []
    if chunk_chars:
        return [text[i : i + chunk_chars] for i in range(0, len(text), chunk_chars)]
    return re.findall(r"\s*\S+\s*", text) or [text]


def halves(text: str) -> list[str]:
    """Tool arguments stream in two fragments so clients must concatenate them."""
    if len(text) < 2:
        return [text]
    middle = len(text) // 2
    return [text[:middle], text[middle:]]


def fake_embedding(text: str, dimensions: int = 8) -> list[float]:
    """A deterministic unit-ish vector: equal texts embed equally, different ones differ."""
    values: list[float] = []
    counter = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend((b - 127.5) / 127.5 for b in digest)
        counter += 1
    vector = values[:dimensions]
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in vector]


def float32_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
