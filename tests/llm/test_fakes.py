"""The fake upstreams' own behaviour: script order, recording, reset, vendor validation."""

from __future__ import annotations

import subprocess
import sys

import httpx

from corral.testing.fakes import FakeAnthropic, FakeGemini, FakeOpenAI, Reply


def chat_body(text: str) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


async def test_replies_are_served_in_order_then_the_default() -> None:
    async with FakeOpenAI(Reply(text="first"), default=Reply(text="fallback")) as fake:
        fake.add(Reply(text="second"))
        assert fake.pending == 2
        async with httpx.AsyncClient(base_url=fake.base_url) as client:
            answers = []
            for _ in range(3):
                response = await client.post("/chat/completions", json=chat_body("x"))
                answers.append(response.json()["choices"][0]["message"]["content"])
    assert answers == ["first", "second", "fallback"]
    assert fake.pending == 0
    assert len(fake.requests) == 3


async def test_requests_are_recorded_with_headers_query_and_body() -> None:
    async with FakeGemini() as fake, httpx.AsyncClient(base_url=fake.base_url) as client:
        await client.post(
            "/models/gemini-2.0-flash:generateContent?foo=bar",
            json={"contents": [{"role": "user", "parts": [{"text": "hello"}]}]},
            headers={"X-Trace": "t-1"},
        )
    recorded = fake.last_request
    assert recorded.method == "POST"
    assert recorded.path == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert recorded.query == {"foo": "bar"}
    assert recorded.headers["x-trace"] == "t-1"
    assert recorded.body["contents"][0]["parts"][0]["text"] == "hello"


async def test_reset_forgets_the_script_and_the_record() -> None:
    async with FakeOpenAI(Reply(text="queued")) as fake:
        async with httpx.AsyncClient(base_url=fake.base_url) as client:
            await client.get("/models")
        fake.reset()
        assert (fake.pending, fake.requests) == (0, [])


async def test_anthropic_fake_enforces_required_headers_and_fields() -> None:
    async with FakeAnthropic() as fake, httpx.AsyncClient(base_url=fake.base_url) as client:
        no_version = await client.post("/v1/messages", json={"model": "c", "max_tokens": 5, "messages": []})
        no_max = await client.post(
            "/v1/messages", json={"model": "c", "messages": []}, headers={"anthropic-version": "2023-06-01"}
        )
    assert no_version.status_code == 400
    assert no_version.json()["error"] == {"type": "invalid_request_error",
                                          "message": "anthropic-version: header is required"}
    assert no_max.status_code == 400 and no_max.json()["error"]["message"] == "max_tokens: Field required"


async def test_gemini_stream_without_alt_sse_is_one_json_array() -> None:
    async with FakeGemini(Reply(text="a b")) as fake, httpx.AsyncClient(base_url=fake.base_url) as client:
        response = await client.post(
            "/models/gemini-2.0-flash:streamGenerateContent",
            json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
        )
    chunks = response.json()
    assert isinstance(chunks, list) and len(chunks) == 3
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == "a b"


async def test_openai_stream_without_include_usage_has_no_usage_field() -> None:
    async with FakeOpenAI(Reply(text="x")) as fake, httpx.AsyncClient(base_url=fake.base_url) as client:
        response = await client.post("/chat/completions", json={**chat_body("hi"), "stream": True})
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    assert all('"usage"' not in event for event in events)


def test_module_runs_a_fake_as_a_process() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "corral.testing.fakes", "openai", "--text", "from a process"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        response = httpx.post(f"{base_url}/chat/completions", json=chat_body("hi"), timeout=10)
        assert response.json()["choices"][0]["message"]["content"] == "from a process"
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_public_surface_is_pinned() -> None:
    import corral.testing.fakes as fakes

    assert sorted(fakes.__all__) == [
        "FakeAnthropic", "FakeGemini", "FakeOpenAI", "FakeUpstream", "RecordedRequest", "Reply", "ReplyToolCall",
    ]
