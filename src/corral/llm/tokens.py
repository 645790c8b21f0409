"""Corral's one token estimate, for where no upstream tokenizer answers: about four
characters a token, rounded up. Cheap, stable across runs, and the same everywhere it is
used (Anthropic's `count_tokens`, context compaction, the scripted model's usage).

The fake upstreams in `corral.testing.fakes` count differently on purpose (whitespace
words, as if the vendor had its own tokenizer), so a test can tell the upstream's count
from one Corral estimated.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from corral.llm.types import Message


def estimate_text_tokens(text: str) -> int:
    """Tokens in a piece of text: ``ceil(len / 4)``; nothing is 0 tokens."""
    return (len(text) + 3) // 4


def estimate_tokens(messages: Iterable[Message], tools: Sequence[object] = ()) -> int:
    """Tokens in a prompt: its messages' text, their tool calls (name and arguments) and
    the tool definitions (as JSON), counted as one text."""
    chars = 0
    for message in messages:
        chars += len(message.text_content)
        for call in message.tool_calls:
            chars += len(call.name) + len(call.arguments)
    if tools:
        chars += len(json.dumps(tools, default=str))
    return (chars + 3) // 4
