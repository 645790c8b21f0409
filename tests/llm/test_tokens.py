"""Corral's one token estimate (`corral.llm.tokens`): about four characters a token,
rounded up, over a prompt's text, tool calls and tool definitions."""

from __future__ import annotations

import json

from corral.llm.tokens import estimate_text_tokens, estimate_tokens
from corral.llm.types import Message, ToolCall


def test_text_is_four_characters_a_token_rounded_up() -> None:
    assert [estimate_text_tokens(t) for t in ("", "a", "abcd", "abcde", "hello there")] == [0, 1, 1, 2, 3]


def test_a_prompt_counts_text_tool_calls_and_tool_definitions_as_one_text() -> None:
    messages = [Message.text("system", "y" * 8), Message.text("user", "x" * 40)]
    assert estimate_tokens(messages) == 12  # what Anthropic's count_tokens answered for this prompt
    call = Message(role="assistant", tool_calls=[ToolCall("c1", "lookup", '{"q":"cat"}')])
    tools = [{"name": "lookup", "input_schema": {"type": "object"}}]
    chars = 48 + len("lookup") + len('{"q":"cat"}') + len(json.dumps(tools))
    assert estimate_tokens([*messages, call], tools) == (chars + 3) // 4
    assert estimate_tokens([]) == 0
