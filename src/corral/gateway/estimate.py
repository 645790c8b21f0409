"""Token estimates where no upstream count exists: about four characters a token.

Used for what a call may cost before it runs (its budget reservation) and for a stream
cut before the upstream reported its usage (the row is marked ``estimated``)."""

from __future__ import annotations

from corral.llm.types import ChatRequest, ReasoningDelta, StreamEvent, TextDelta, ToolCallDelta


def tokens_of(chars: int) -> int:
    return (chars + 3) // 4


def input_tokens(request: ChatRequest) -> int:
    chars = 0
    for message in request.messages:
        chars += len(message.text_content)
        for call in message.tool_calls:
            chars += len(call.name) + len(call.arguments)
    for tool in request.tools:
        chars += len(tool.name) + len(tool.description or "") + len(str(tool.parameters))
    return max(1, tokens_of(chars))


class Relayed:
    """The output characters a stream has relayed so far."""

    __slots__ = ("chars",)

    def __init__(self) -> None:
        self.chars = 0

    def add(self, event: StreamEvent) -> None:
        if isinstance(event, TextDelta | ReasoningDelta):
            self.chars += len(event.text)
        elif isinstance(event, ToolCallDelta):
            self.chars += len(event.arguments) + len(event.name or "")

    @property
    def tokens(self) -> int:
        return tokens_of(self.chars)
