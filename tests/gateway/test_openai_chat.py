"""`/v1/chat/completions` against the official `openai` SDK over a real loopback server."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from corral.config.schema import ScriptStep, ServerConfig


async def test_non_stream_answers_with_scripted_text_usage_and_overhead_header(client, scripted_server) -> None:
    async with scripted_server() as (base_url, provider):
        raw = await client(base_url).chat.completions.with_raw_response.create(
            model="scripted", messages=[{"role": "user", "content": "hello there"}]
        )
        completion = raw.parse()
    assert completion.choices[0].message.content == "You said: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "scripted"
    assert completion.id.startswith("chatcmpl-")
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 3  # "hello there" = 11 chars -> 3 tokens
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert float(raw.headers["x-corral-overhead-ms"]) >= 0
    assert provider.requests[0].messages[0].text_content == "hello there"


async def test_stream_chunks_share_id_and_end_with_usage_chunk_with_empty_choices(client, scripted_server) -> None:
    steps = [ScriptStep(text="one two three", usage={"input_tokens": 7, "output_tokens": 3})]
    async with scripted_server(steps) as (base_url, _):
        stream = await client(base_url).chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "count"}], stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert len({c.id for c in chunks}) == 1
    assert len({c.created for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert chunks[0].choices[0].delta.role == "assistant"
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finishing] == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and (last.usage.prompt_tokens, last.usage.completion_tokens) == (7, 3)
    assert all(c.usage is None for c in chunks[:-1])


async def test_stream_without_include_usage_has_no_usage_chunk_and_ends_with_done(client, scripted_server) -> None:
    async with scripted_server() as (base_url, _):
        async with httpx.AsyncClient(base_url=base_url) as http:
            response = await http.post("/v1/chat/completions", json={
                "model": "scripted", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    lines = [line for line in response.text.split("\n\n") if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"
    payloads = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all("usage" not in p for p in payloads)
    assert all(p["choices"] for p in payloads)


async def test_parallel_tool_calls_non_stream_and_stream(client, scripted_server) -> None:
    calls = [{"name": "get_weather", "arguments": {"city": "Paris"}},
             {"name": "get_time", "arguments": {"tz": "CET"}}]
    tools = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
             for n in ("get_weather", "get_time")]
    steps = [ScriptStep(tool_calls=calls), ScriptStep(tool_calls=calls)]
    async with scripted_server(steps) as (base_url, provider):
        sdk = client(base_url)
        completion = await sdk.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "weather?"}], tools=tools)
        stream = await sdk.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "weather?"}], tools=tools, stream=True)
        chunks = [c async for c in stream]
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == [
        ("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})]
    assert provider.requests[0].tools[0].name == "get_weather"
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert sorted({d.index for d in deltas}) == [0, 1]
    assert all(d.index is not None for d in deltas)
    by_index: dict[int, str] = {}
    for d in deltas:
        by_index[d.index] = by_index.get(d.index, "") + (d.function.arguments or "")
    assert json.loads(by_index[1]) == {"tz": "CET"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_malformed_json_is_a_400_openai_error(client, scripted_server) -> None:
    async with scripted_server() as (base_url, _):
        async with httpx.AsyncClient(base_url=base_url) as http:
            response = await http.post("/v1/chat/completions", content=b'{"model": "scripted",',
                                        headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_json"
    assert "parse the JSON" in error["message"]


async def test_schema_violation_names_the_field(client, scripted_server) -> None:
    async with scripted_server() as (base_url, _):
        with pytest.raises(openai.BadRequestError) as caught:
            await client(base_url).chat.completions.create(
                model="scripted", messages=[{"role": "wizard", "content": "hi"}])
    assert caught.value.status_code == 400
    assert caught.value.param == "messages[0].role"
    assert "messages[0].role" in caught.value.message


async def test_wrong_type_temperature_is_rejected(client, scripted_server) -> None:
    async with scripted_server() as (base_url, _):
        with pytest.raises(openai.BadRequestError) as caught:
            await client(base_url).chat.completions.create(
                model="scripted", messages=[{"role": "user", "content": "hi"}], temperature="hot")  # type: ignore[arg-type]
    assert caught.value.param == "temperature"


async def test_unknown_model_is_404_model_not_found(client, scripted_server) -> None:
    async with scripted_server() as (base_url, _):
        with pytest.raises(openai.NotFoundError) as caught:
            await client(base_url).chat.completions.create(
                model="gpt-nope", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "model_not_found"
    assert "gpt-nope" in caught.value.message


async def test_body_over_limit_is_413(client, scripted_server) -> None:
    async with scripted_server(server=ServerConfig(max_body_bytes=2048)) as (base_url, provider):
        with pytest.raises(openai.APIStatusError) as caught:
            await client(base_url).chat.completions.create(
                model="scripted", messages=[{"role": "user", "content": "x" * 5000}])
    assert caught.value.status_code == 413
    assert caught.value.code == "request_too_large"
    assert provider.requests == []


@pytest.mark.parametrize(
    ("error", "sdk_error", "status"),
    [
        ("authentication", openai.AuthenticationError, 401),
        ("permission", openai.PermissionDeniedError, 403),
        ("rate_limit", openai.RateLimitError, 429),
        ("unavailable", openai.InternalServerError, 502),
        ("timeout", openai.InternalServerError, 504),
        ("context_length", openai.BadRequestError, 400),
    ],
)
async def test_upstream_errors_map_to_typed_sdk_errors(client, scripted_server, error, sdk_error, status) -> None:
    async with scripted_server([ScriptStep(error=error)], ) as (base_url, _):
        with pytest.raises(sdk_error) as caught:
            await client(base_url).chat.completions.create(
                model="scripted", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == status
    if error == "rate_limit":
        assert caught.value.response.headers["retry-after"] == "1"
    if error == "context_length":
        assert caught.value.code == "context_length_exceeded"


async def test_upstream_error_before_first_chunk_is_an_http_error_on_streams(client, scripted_server) -> None:
    async with scripted_server([ScriptStep(error="rate_limit")]) as (base_url, _):
        with pytest.raises(openai.RateLimitError):
            await client(base_url).chat.completions.create(
                model="scripted", messages=[{"role": "user", "content": "hi"}], stream=True)


async def test_client_disconnect_mid_stream_cancels_the_upstream(client, scripted_server) -> None:
    words = " ".join(f"w{i}" for i in range(200))
    async with scripted_server([ScriptStep(text=words, chunk_delay=0.02)]) as (base_url, provider):
        async with httpx.AsyncClient(base_url=base_url) as http:
            async with http.stream("POST", "/v1/chat/completions", json={
                    "model": "scripted", "stream": True, "messages": [{"role": "user", "content": "go"}]}) as resp:
                received = 0
                async for _ in resp.aiter_lines():
                    received += 1
                    if received > 6:
                        break
        for _ in range(100):  # bounded: up to 2 s for the server to notice
            if provider.streams_closed_early:
                break
            await asyncio.sleep(0.02)
    assert provider.streams_closed_early == 1


async def test_models_health_and_readiness(client, scripted_server) -> None:
    async with scripted_server() as (base_url, _):
        models = await client(base_url).models.list()
        async with httpx.AsyncClient(base_url=base_url) as http:
            health = (await http.get("/health")).json()
            ready = await http.get("/readyz")
            missing = await http.get("/v1/nope")
    assert [m.id for m in models.data] == ["scripted"]
    assert health["status"] == "ok" and health["version"]
    assert ready.status_code == 200
    assert missing.status_code == 404 and missing.json()["error"]["message"].startswith("Unknown route")


async def test_request_id_is_echoed_only_when_it_is_a_plain_token(client, scripted_server) -> None:
    async with scripted_server() as (base_url, _):
        async with httpx.AsyncClient(base_url=base_url) as http:
            plain = await http.get("/health", headers={"x-request-id": "trace-42.a:b"})
            hostile = await http.get("/health", headers={"x-request-id": "x" * 500})
            injected = await http.get("/health", headers={"x-request-id": "a\tb<script>"})
    assert plain.headers["x-request-id"] == "trace-42.a:b"
    assert len(hostile.headers["x-request-id"]) == 32  # replaced by a generated id
    assert injected.headers["x-request-id"] != "a\tb<script>"
