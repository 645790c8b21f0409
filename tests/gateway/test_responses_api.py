"""`/v1/responses` against the official `openai` SDK over a real loopback server."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from corral.config.schema import CorralConfig, ModelConfig, ScriptStep
from corral.gateway.app import create_app
from corral.llm.errors import UpstreamUnavailableError
from corral.llm.types import TextDelta
from corral.testing.server import serve_app

NO_RETRIES = {"models": {"scripted": ModelConfig(provider="script", model="scripted", num_retries=0)}}




async def test_non_stream_string_input_returns_completed_response_with_output_text(client, scripted_server) -> None:
    steps = [ScriptStep(text="Hi there", usage={"input_tokens": 5, "output_tokens": 2})]
    async with scripted_server(steps) as (base_url, provider):
        response = await client(base_url).responses.create(model="scripted", input="hello",
                                                           instructions="Be kind.", max_output_tokens=64)
    assert response.object == "response" and response.status == "completed"
    assert response.id.startswith("resp_")
    assert response.output_text == "Hi there"
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (5, 2, 7)
    sent = provider.requests[0]
    assert [(m.role, m.text_content) for m in sent.messages] == [("system", "Be kind."), ("user", "hello")]
    assert sent.max_tokens == 64


async def test_function_call_round_trip_with_items(client, scripted_server) -> None:
    steps = [ScriptStep(tool_calls=[{"id": "call_7", "name": "add", "arguments": {"a": 1, "b": 2}}]),
             ScriptStep(text="3")]
    tools = [{"type": "function", "name": "add", "description": "Add",
              "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}}]
    async with scripted_server(steps) as (base_url, provider):
        sdk = client(base_url)
        first = await sdk.responses.create(model="scripted", input=[{"role": "user", "content": "1+2?"}],
                                           tools=tools, tool_choice="required")
        call = first.output[0]
        second = await sdk.responses.create(model="scripted", tools=tools, input=[
            {"role": "user", "content": [{"type": "input_text", "text": "1+2?"}]},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "3"},
        ])
    assert (call.type, call.call_id, call.name, json.loads(call.arguments)) == ("function_call", "call_7", "add",
                                                                              {"a": 1, "b": 2})
    assert second.output_text == "3"
    assert provider.requests[0].tool_choice == "required"
    assert provider.requests[0].tools[0].name == "add"
    history = provider.requests[1].messages
    assert [m.role for m in history] == ["user", "assistant", "tool"]
    assert history[1].tool_calls[0].id == "call_7"
    assert (history[2].tool_call_id, history[2].text_content) == ("call_7", "3")


async def test_stream_events_have_increasing_sequence_numbers_and_documented_order(client, scripted_server) -> None:
    steps = [ScriptStep(text="one two", usage={"input_tokens": 4, "output_tokens": 2})]
    async with scripted_server(steps) as (base_url, _):
        stream = await client(base_url).responses.create(model="scripted", input="count", stream=True)
        events = [event async for event in stream]
    assert [e.type for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "one two"
    completed = events[-1].response
    assert completed.output_text == "one two"
    assert completed.usage is not None and completed.usage.output_tokens == 2
    assert len({e.response.id for e in events if hasattr(e, "response")}) == 1


async def test_stream_helper_accumulates_text_then_function_calls(client, scripted_server) -> None:
    steps = [ScriptStep(text="Let me check", tool_calls=[{"id": "c1", "name": "a", "arguments": {"x": 1}},
                                                         {"id": "c2", "name": "b", "arguments": {"y": 2}}])]
    async with scripted_server(steps) as (base_url, _), client(base_url).responses.stream(
        model="scripted", input="go",
        tools=[{"type": "function", "name": n, "parameters": {"type": "object"}, "strict": False}
               for n in ("a", "b")],
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert [o.type for o in final.output] == ["message", "function_call", "function_call"]
    assert final.output_text == "Let me check"
    assert [(o.call_id, o.name, json.loads(o.arguments)) for o in final.output[1:]] == [("c1", "a", {"x": 1}),
                                                                                        ("c2", "b", {"y": 2})]
    assert kinds.count("response.function_call_arguments.done") == 2
    assert kinds[-1] == "response.completed"


async def test_stream_wire_has_event_lines_and_no_done_sentinel(scripted_server) -> None:
    async with scripted_server() as (base_url, _), httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post("/v1/responses", json={"model": "scripted", "input": "hi", "stream": True})
    blocks = [b for b in response.text.split("\n\n") if b]
    assert all(b.startswith("event: ") and "\ndata: " in b for b in blocks)
    assert "[DONE]" not in response.text
    for block in blocks:
        name, data = block.split("\n", 1)
        assert json.loads(data.removeprefix("data: "))["type"] == name.removeprefix("event: ")


async def test_errors_are_openai_format_and_typed_in_the_sdk(client, scripted_server) -> None:
    steps = [ScriptStep(error="rate_limit"), ScriptStep(error="unavailable")]
    async with scripted_server(steps, **NO_RETRIES) as (base_url, provider):
        sdk = client(base_url)
        with pytest.raises(openai.NotFoundError):
            await sdk.responses.create(model="nope", input="x")
        with pytest.raises(openai.BadRequestError) as bad:
            await sdk.responses.create(model="scripted", input="x", previous_response_id="resp_1")
        with pytest.raises(openai.BadRequestError) as tool:
            await sdk.responses.create(model="scripted", input="x", tools=[{"type": "web_search"}])
        with pytest.raises(openai.RateLimitError):
            await sdk.responses.create(model="scripted", input="x")
        with pytest.raises(openai.InternalServerError) as down:
            await sdk.responses.create(model="scripted", input="x", stream=True)
    assert bad.value.body["param"] == "previous_response_id"
    assert tool.value.body["param"] == "tools[0].type"
    assert down.value.status_code == 502
    assert len(provider.requests) == 2


class BreaksMidStream:
    name = "script"

    async def stream(self, request, *, read_ahead=None):
        yield TextDelta("partial")
        raise UpstreamUnavailableError("connection reset", provider="script")

    async def complete(self, request):
        raise AssertionError("not used")

    async def list_models(self):
        return []

    async def embed(self, texts, model):
        raise AssertionError("not used")

    async def aclose(self) -> None:
        return None


async def test_failure_after_output_sends_error_then_response_failed() -> None:
    config = CorralConfig.model_validate({"providers": {"script": {"type": "scripted"}},
                                          "models": {"m": {"provider": "script", "model": "x", "num_retries": 0}}})
    app = create_app(config, providers={"script": BreaksMidStream()})
    async with serve_app(app) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post("/v1/responses", json={"model": "m", "input": "go", "stream": True})
    assert response.status_code == 200
    events = [json.loads(b.split("\ndata: ", 1)[1]) for b in response.text.split("\n\n") if b]
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert events[-2]["code"] == "upstream_unavailable"
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "upstream_unavailable"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
