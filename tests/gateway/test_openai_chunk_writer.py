"""`ChunkWriter`: OpenAI stream chunks, each the response's pre-encoded head and tail
around its delta. The bytes must be the chunk OpenAI's format defines, whatever the
model name or the text holds."""

from __future__ import annotations

import orjson
import pytest

from corral.gateway.openai_format import ChunkWriter
from corral.llm.types import FinishEvent, ReasoningDelta, TextDelta, ToolCallDelta, Usage, UsageEvent


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("model", ["gpt", 'we"ird\\ name é'])
def test_every_chunk_is_the_full_openai_chunk_in_order(include_usage: bool, model: str) -> None:
    writer = ChunkWriter(id="chatcmpl-1", created=5, model=model, include_usage=include_usage)
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 5, "model": model,
            "system_fingerprint": None}

    def chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
        out: dict[str, object] = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                                       "logprobs": None}]}
        if include_usage:
            out["usage"] = None
        return out

    raw = [writer.start()]
    for event in (TextDelta('hé\n"x'), ReasoningDelta("hm"), ToolCallDelta(index=0, id="c1", name="f", arguments="{"),
                  ToolCallDelta(index=0, arguments="}"), UsageEvent(Usage(input_tokens=3, output_tokens=2)),
                  FinishEvent("tool_calls")):
        out = writer.event(event)
        if out is not None:
            raw.append(out)
    raw.append(writer.end())
    events = [part for blob in raw for part in blob.split(b"\n\n") if part]
    assert all(e.startswith(b"data: ") for e in events) and events[-1] == b"data: [DONE]"
    parsed = [orjson.loads(e[6:]) for e in events[:-1]]
    expected = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": 'hé\n"x'}),
        chunk({"reasoning_content": "hm"}),
        chunk({"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}),
        chunk({}, "tool_calls"),
    ]
    if include_usage:
        expected.append({**head, "choices": [], "usage": {
            "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}})
    assert parsed == expected
    assert [list(p) for p in parsed] == [list(e) for e in expected]  # key order too, as OpenAI sends it
