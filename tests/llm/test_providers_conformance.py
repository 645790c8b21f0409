"""Every adapter, against its vendor's fake upstream, gives the same neutral answers
and maps every failure to the same typed error."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from corral.llm import errors
from corral.llm.provider import Provider
from corral.llm.types import (
    ChatRequest,
    FinishEvent,
    Message,
    StreamAccumulator,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
    Usage,
    UsageEvent,
)
from corral.testing.fakes import FakeUpstream, Reply, ReplyToolCall

MakeProvider = Callable[..., Provider]

WEATHER = ToolSpec("get_weather", "Weather for a city", {"type": "object", "properties": {"city": {"type": "string"}}})
TIME = ToolSpec("get_time", "Time in a zone", {"type": "object", "properties": {"tz": {"type": "string"}}})


def chat(text: str = "Hello there", **kw: object) -> ChatRequest:
    model = kw.pop("model", "test-model")
    return ChatRequest(model=str(model), messages=[Message.text("user", text)], **kw)  # type: ignore[arg-type]


async def collect(provider: Provider, request: ChatRequest) -> list[StreamEvent]:
    return [event async for event in provider.stream(request)]


def fold(events: list[StreamEvent]) -> StreamAccumulator:
    acc = StreamAccumulator()
    for event in events:
        acc.add(event)
    return acc


def parallel_calls() -> Reply:
    return Reply.tools(
        ReplyToolCall("get_weather", {"city": "Paris"}, id="call-w"),
        ReplyToolCall("get_time", {"tz": "UTC"}, id="call-t"),
    )


async def test_complete_returns_the_text_finish_and_model(provider: Provider, fake: FakeUpstream) -> None:
    fake.add(Reply(text="The sky is blue.", model="served-model"))
    result = await provider.complete(chat("What colour is the sky?"))
    assert result.message.role == "assistant"
    assert result.message.text_content == "The sky is blue."
    assert result.finish_reason == "stop"
    assert result.model == "served-model"
    assert result.message.tool_calls == []


async def test_stream_yields_text_deltas_then_usage_then_finish(provider: Provider, fake: FakeUpstream) -> None:
    fake.add(Reply(text="one two three four", input_tokens=11, output_tokens=4))
    events = await collect(provider, chat())
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert "".join(texts) == "one two three four"
    assert len(texts) == 4
    assert isinstance(events[-2], UsageEvent) and isinstance(events[-1], FinishEvent)
    assert events[-2].usage.input_tokens == 11 and events[-2].usage.output_tokens == 4
    assert events[-1].reason == "stop"


async def test_default_reply_echoes_the_last_user_message(provider: Provider) -> None:
    result = await provider.complete(chat("ping 42"))
    assert result.message.text_content == "You said: ping 42"


async def test_parallel_tool_calls_complete(provider: Provider, fake: FakeUpstream, wire: str) -> None:
    fake.add(parallel_calls())
    result = await provider.complete(chat("weather and time?", tools=[WEATHER, TIME]))
    assert result.finish_reason == "tool_calls"
    calls = result.message.tool_calls
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    assert [c.parsed_arguments() for c in calls] == [{"city": "Paris"}, {"tz": "UTC"}]
    assert [c.id for c in calls] == ["call-w", "call-t"]


async def test_parallel_tool_calls_stream_with_indexes(provider: Provider, fake: FakeUpstream) -> None:
    fake.add(parallel_calls())
    events = await collect(provider, chat("weather and time?", tools=[WEATHER, TIME]))
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert {d.index for d in deltas} == {0, 1}
    assert [d.name for d in deltas if d.name] == ["get_weather", "get_time"]
    result = fold(events).result()
    assert result.finish_reason == "tool_calls"
    assert [(c.id, c.name, json.loads(c.arguments)) for c in result.message.tool_calls] == [
        ("call-w", "get_weather", {"city": "Paris"}),
        ("call-t", "get_time", {"tz": "UTC"}),
    ]


async def test_tool_call_without_arguments_yields_an_empty_object(provider: Provider, fake: FakeUpstream) -> None:
    fake.add(Reply.tools(("get_time", {})))
    result = fold(await collect(provider, chat(tools=[TIME]))).result()
    assert result.message.tool_calls[0].parsed_arguments() == {}


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_usage_counts_cached_and_reasoning_tokens(
    provider: Provider, fake: FakeUpstream, wire: str, stream: bool
) -> None:
    fake.add(Reply(text="ok", input_tokens=120, output_tokens=9, cached_tokens=100, reasoning_tokens=4))
    usage = fold(await collect(provider, chat())).usage if stream else (await provider.complete(chat())).usage
    # Anthropic reports no separate thinking-token count.
    reasoning = 0 if wire == "anthropic" else 4
    assert usage == Usage(input_tokens=120, output_tokens=9, cached_input_tokens=100, reasoning_tokens=reasoning)


async def test_reasoning_arrives_separately_from_the_answer(provider: Provider, fake: FakeUpstream) -> None:
    fake.add(Reply(text="42", reasoning="think hard"), Reply(text="42", reasoning="think hard"))
    result = await provider.complete(chat())
    assert (result.message.text_content, result.message.reasoning) == ("42", "think hard")
    streamed = fold(await collect(provider, chat())).result()
    assert (streamed.message.text_content, streamed.message.reasoning) == ("42", "think hard")


@pytest.mark.parametrize(
    ("finish", "expected"), [("length", "length"), ("content_filter", "content_filter")]
)
async def test_finish_reasons_map_to_neutral_names(
    provider: Provider, fake: FakeUpstream, finish: str, expected: str
) -> None:
    fake.add(Reply(text="cut", finish_reason=finish), Reply(text="cut", finish_reason=finish))
    assert (await provider.complete(chat())).finish_reason == expected
    assert fold(await collect(provider, chat())).finish_reason == expected


STATUS_ERRORS = [
    (400, errors.BadRequestError),
    (401, errors.AuthenticationError),
    (403, errors.PermissionDeniedError),
    (404, errors.NotFoundError),
    (413, errors.BadRequestError),
    (429, errors.RateLimitError),
    (500, errors.UpstreamUnavailableError),
    (503, errors.UpstreamUnavailableError),
    (504, errors.UpstreamTimeout),
    (529, errors.UpstreamUnavailableError),
]


@pytest.mark.parametrize(("status", "error_type"), STATUS_ERRORS)
@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_error_statuses_map_to_typed_errors_with_the_vendor_message(
    provider: Provider, fake: FakeUpstream, status: int, error_type: type[errors.ProviderError], stream: bool
) -> None:
    fake.add(Reply.error(status, f"scripted failure {status}"))
    with pytest.raises(error_type) as caught:
        if stream:
            await collect(provider, chat())
        else:
            await provider.complete(chat())
    assert caught.value.upstream_status == status
    assert caught.value.message == f"scripted failure {status}"
    assert caught.value.provider is not None


@pytest.mark.parametrize("header", [("retry-after", "7"), ("retry-after-ms", "7000")])
async def test_rate_limit_carries_retry_after_seconds(
    provider: Provider, fake: FakeUpstream, header: tuple[str, str]
) -> None:
    fake.add(Reply.error(429, "slow down", headers=dict([header])))
    with pytest.raises(errors.RateLimitError) as caught:
        await provider.complete(chat())
    assert caught.value.retry_after == pytest.approx(7.0)
    assert caught.value.retryable is True


CONTEXT_ERRORS = {
    "openai": Reply(status=400, error_body={"error": {
        "message": "This model's maximum context length is 128000 tokens.", "type": "invalid_request_error",
        "param": "messages", "code": "context_length_exceeded"}}),
    "anthropic": Reply.error(400, "prompt is too long: 210000 tokens > 200000 maximum"),
    "gemini": Reply.error(
        400, "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."
    ),
}


async def test_context_length_errors_are_recognised(provider: Provider, fake: FakeUpstream, wire: str) -> None:
    fake.add(CONTEXT_ERRORS[wire])
    with pytest.raises(errors.ContextLengthError) as caught:
        await provider.complete(chat())
    assert caught.value.upstream_status == 400


async def test_api_key_never_appears_in_an_error(provider: Provider, fake: FakeUpstream, api_key: str) -> None:
    fake.add(Reply.error(401, f"Incorrect API key provided: {api_key}"))
    with pytest.raises(errors.AuthenticationError) as caught:
        await provider.complete(chat())
    assert api_key not in str(caught.value)
    assert "***" in str(caught.value)


async def test_wrong_key_is_an_authentication_error(wire: str, fake: FakeUpstream, make: MakeProvider) -> None:
    provider = make(wire, fake.base_url, api_key="wrong-key")
    try:
        with pytest.raises(errors.AuthenticationError):
            await provider.complete(chat())
    finally:
        await provider.aclose()


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_garbage_body_is_upstream_unavailable(provider: Provider, fake: FakeUpstream, stream: bool) -> None:
    fake.add(Reply.garbage())
    with pytest.raises(errors.UpstreamUnavailableError) as caught:
        if stream:
            await collect(provider, chat())
        else:
            await provider.complete(chat())
    assert caught.value.retryable is True


async def test_garbage_body_message_says_it_is_not_json(provider: Provider, fake: FakeUpstream) -> None:
    fake.add(Reply.garbage())
    with pytest.raises(errors.UpstreamUnavailableError, match="not JSON"):
        await provider.complete(chat())


async def test_garbage_error_body_keeps_the_status_mapping(provider: Provider, fake: FakeUpstream) -> None:
    fake.add(Reply.garbage(b"<html>Service Unavailable</html>", status=503))
    with pytest.raises(errors.UpstreamUnavailableError) as caught:
        await provider.complete(chat())
    assert caught.value.upstream_status == 503
    assert "Service Unavailable" in caught.value.message


async def test_truncated_body_is_upstream_unavailable(provider: Provider, fake: FakeUpstream) -> None:
    fake.add(Reply(text="half of this never arrives", truncate=True))
    with pytest.raises(errors.UpstreamUnavailableError, match="not JSON"):
        await provider.complete(chat())


async def test_truncated_stream_is_upstream_unavailable(provider: Provider, fake: FakeUpstream) -> None:
    fake.add(Reply(text="a stream that stops early", truncate=True))
    received: list[StreamEvent] = []
    with pytest.raises(errors.UpstreamUnavailableError, match="ended before it finished"):
        async for event in provider.stream(chat()):
            received.append(event)
    assert "".join(e.text for e in received if isinstance(e, TextDelta)) == "a stream that stops early"
    assert not any(isinstance(e, FinishEvent) for e in received)


async def test_connection_dropped_mid_stream_is_upstream_unavailable(provider: Provider, fake: FakeUpstream) -> None:
    fake.add(Reply(text="cut off in the middle", drop=True))
    with pytest.raises(errors.UpstreamUnavailableError, match="closed the connection"):
        await collect(provider, chat())


async def test_slow_answer_past_the_request_timeout_is_a_timeout(provider: Provider, fake: FakeUpstream) -> None:
    fake.add(Reply(text="too late", delay=5))
    with pytest.raises(errors.UpstreamTimeout) as caught:
        await provider.complete(chat(timeout=0.3))
    assert caught.value.retryable is True


async def test_stalled_stream_past_the_read_timeout_is_a_timeout(
    wire: str, fake: FakeUpstream, make: MakeProvider
) -> None:
    provider = make(wire, fake.base_url, timeout=0.3)
    fake.add(Reply(text="one two three", chunk_delay=5))
    try:
        with pytest.raises(errors.UpstreamTimeout):
            await collect(provider, chat())
    finally:
        await provider.aclose()


async def test_connection_refused_is_upstream_unavailable(
    wire: str, closed_port: int, fake_class: type[FakeUpstream], make: MakeProvider
) -> None:
    prefix = fake_class.prefix
    provider = make(wire, f"http://127.0.0.1:{closed_port}{prefix}")
    try:
        with pytest.raises(errors.UpstreamUnavailableError, match="cannot connect"):
            await provider.complete(chat())
        with pytest.raises(errors.UpstreamUnavailableError):
            await collect(provider, chat())
    finally:
        await provider.aclose()


async def test_list_models_returns_the_upstream_models(
    wire: str, fake_class: type[FakeUpstream], make: MakeProvider
) -> None:
    async with fake_class(models=["model-a", "model-b"]) as fake:
        provider = make(wire, fake.base_url)
        try:
            models = await provider.list_models()
        finally:
            await provider.aclose()
    assert [m.id for m in models] == ["model-a", "model-b"]


async def test_provider_reuses_one_pooled_client(provider: Provider, fake: FakeUpstream) -> None:
    for _ in range(3):
        await provider.complete(chat())
    assert len(fake.requests) == 3
    await provider.aclose()
    with pytest.raises(RuntimeError):
        await provider.complete(chat())


async def test_json_error_answering_a_stream_request_is_mapped(provider: Provider, fake: FakeUpstream) -> None:
    body = b'{"error": {"code": 429, "message": "quota exhausted", "type": "rate_limit_error"}}'
    fake.add(Reply(raw_body=body, content_type="application/json"))
    with pytest.raises(errors.RateLimitError, match="quota exhausted"):
        await collect(provider, chat())


async def test_connection_dropped_mid_body_is_upstream_unavailable(provider: Provider, fake: FakeUpstream) -> None:
    fake.add(Reply(text="never complete", drop=True))
    with pytest.raises(errors.UpstreamUnavailableError, match="closed the connection"):
        await provider.complete(chat())


@pytest.mark.parametrize(("status", "error_type"), [(500, errors.UpstreamUnavailableError),
                                                    (529, errors.UpstreamUnavailableError)])
async def test_error_event_inside_a_stream_is_raised_after_the_content(
    provider: Provider, fake: FakeUpstream, status: int, error_type: type[errors.ProviderError]
) -> None:
    fake.add(Reply(text="partial answer", status=status, error_message="Overloaded", mid_stream_error=True))
    received: list[StreamEvent] = []
    with pytest.raises(error_type, match="Overloaded"):
        async for event in provider.stream(chat()):
            received.append(event)
    assert "".join(e.text for e in received if isinstance(e, TextDelta)) == "partial answer"


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_sequential_requests_reuse_one_connection(provider: Provider, fake: FakeUpstream, stream: bool) -> None:
    for _ in range(3):
        if stream:
            await collect(provider, chat())
        else:
            await provider.complete(chat())
    ports = {r.client_port for r in fake.requests}
    assert len(fake.requests) == 3 and len(ports) == 1 and None not in ports
