"""The scripted model: deterministic replies, tool calls, errors and delays, offline.

Usable in config as provider type ``scripted`` (the zero-config default when no
provider key is present) and directly in tests (``corral.testing.scripted``
re-exports it)::

    provider = ScriptedProvider.from_steps("s", [ScriptStep(text="hi"), ScriptStep(error="rate_limit")])

With no script (or once the script is used up, if ``echo`` is on) it answers
``You said: <last user message>``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Iterable

from corral.config.schema import ProviderConfig, ScriptStep
from corral.llm import errors
from corral.llm.readahead import ReadAhead
from corral.llm.tokens import estimate_text_tokens
from corral.llm.types import (
    ChatRequest,
    ChatResult,
    FinishEvent,
    Message,
    ModelInfo,
    StreamAccumulator,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageEvent,
)

_ERRORS: dict[str, type[errors.ProviderError]] = {
    "authentication": errors.AuthenticationError,
    "permission": errors.PermissionDeniedError,
    "not_found": errors.NotFoundError,
    "rate_limit": errors.RateLimitError,
    "context_length": errors.ContextLengthError,
    "bad_request": errors.BadRequestError,
    "unavailable": errors.UpstreamUnavailableError,
    "timeout": errors.UpstreamTimeout,
}

CHUNK_WORDS = 1  # words per streamed text delta


class ScriptedProvider:
    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self._steps = list(config.script)
        self._echo = config.echo
        self._position = 0
        self._ids = itertools.count(1)
        self.requests: list[ChatRequest] = []  # what it was asked, for tests
        self.streams_closed_early = 0  # streams whose consumer went away before the end

    @classmethod
    def from_steps(cls, name: str, steps: Iterable[ScriptStep], *, echo: bool = True) -> ScriptedProvider:
        return cls(name, ProviderConfig(type="scripted", script=list(steps), echo=echo))

    def _next_step(self, request: ChatRequest) -> ScriptStep:
        self.requests.append(request)
        if self._position < len(self._steps):
            step = self._steps[self._position]
            self._position += 1
            return step
        if self._echo or not self._steps:
            return ScriptStep(text=f"You said: {_last_user_text(request.messages)}")
        return self._steps[-1]

    def _events(self, request: ChatRequest, step: ScriptStep) -> list[StreamEvent]:
        if step.error:
            raise _ERRORS[step.error](f"scripted {step.error} error", provider=self.name,
                                      retry_after=1.0 if step.error == "rate_limit" else None)
        events: list[StreamEvent] = []
        output = ""
        if step.text:
            words = step.text.split(" ")
            for i in range(0, len(words), CHUNK_WORDS):
                piece = " ".join(words[i:i + CHUNK_WORDS])
                events.append(TextDelta(piece if i == 0 else " " + piece))
            output += step.text
        for index, call in enumerate(step.tool_calls or []):
            arguments = call.get("arguments", {})
            text = arguments if isinstance(arguments, str) else json.dumps(arguments, separators=(",", ":"))
            events.append(ToolCallDelta(index=index, id=call.get("id") or f"call_{next(self._ids)}",
                                        name=str(call["name"]), arguments=text))
            output += text
        prompt = "".join(m.text_content for m in request.messages)
        usage = Usage(**step.usage) if step.usage else Usage(estimate_text_tokens(prompt), estimate_text_tokens(output))
        events.append(UsageEvent(usage))
        events.append(FinishEvent("tool_calls" if step.tool_calls else "stop", model=request.model))
        return events

    async def complete(self, request: ChatRequest) -> ChatResult:
        step = self._next_step(request)
        if step.delay:
            await asyncio.sleep(step.delay)
        accumulator = StreamAccumulator(request.model)
        for event in self._events(request, step):
            accumulator.add(event)
        result = accumulator.result()
        result.id = f"scripted-{next(self._ids)}"
        return result

    async def stream(self, request: ChatRequest, *, read_ahead: ReadAhead | None = None) -> AsyncIterator[StreamEvent]:
        step = self._next_step(request)
        if step.delay:
            await asyncio.sleep(step.delay)
        delivered = False
        try:
            for event in self._events(request, step):
                if step.chunk_delay:
                    await asyncio.sleep(step.chunk_delay)
                yield event
            delivered = True
        finally:
            if not delivered:
                self.streams_closed_early += 1

    async def list_models(self) -> list[ModelInfo]:
        return [ModelInfo(id="scripted", owned_by=self.name, context_window=128_000, max_output_tokens=8_192)]

    async def embed(self, texts: list[str], model: str) -> tuple[list[list[float]], int]:
        return [_hash_vector(t) for t in texts], sum(estimate_text_tokens(t) for t in texts)

    async def aclose(self) -> None:
        return None


def _last_user_text(messages: list[Message]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            return message.text_content
    return ""


def _hash_vector(text: str, dims: int = 64) -> list[float]:
    """A deterministic bag-of-words vector: similar texts get similar vectors."""
    import hashlib
    import math

    vector = [0.0] * dims
    for word in text.lower().split():
        digest = hashlib.blake2b(word.encode(), digest_size=4).digest()
        vector[int.from_bytes(digest, "little") % dims] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]
