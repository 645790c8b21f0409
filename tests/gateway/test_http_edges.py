"""HTTP edges every surface shares: 405 names the allowed methods, CORS exposes the
headers clients read, compressed bodies are decoded (others refused with 415), unknown
model names go to ``default_model``, Anthropic routes carry ``request-id``."""

from __future__ import annotations

import gzip
import zlib

import anthropic
import httpx
import openai
from tests.gateway.conftest import scripted_config

from corral.config.schema import ScriptStep
from corral.gateway.app import create_app
from corral.testing.scripted import ScriptedProvider
from corral.testing.server import serve_app

CHAT = {"model": "scripted", "messages": [{"role": "user", "content": "hello there"}]}


async def test_405_answers_name_every_method_the_path_serves() -> None:
    async with serve_app(create_app(scripted_config(), providers={"script": ScriptedProvider.from_steps("s", [])})) \
            as url, httpx.AsyncClient(base_url=url) as http:
        chat = await http.get("/v1/chat/completions")
        keys = await http.put("/admin/keys")
    assert chat.status_code == 405 and chat.headers["allow"] == "POST"
    assert chat.json()["error"]["message"] == "Method GET is not allowed on /v1/chat/completions"
    assert keys.status_code == 405 and keys.headers["allow"] == "GET, HEAD, POST"


async def test_cors_exposes_the_headers_browser_clients_read() -> None:
    config = scripted_config(server={"cors_origins": ["https://app.example"]})
    provider = ScriptedProvider.from_steps("script", [ScriptStep(text="hi")])
    async with serve_app(create_app(config, providers={"script": provider})) as url, \
            httpx.AsyncClient(base_url=url) as http:
        answer = await http.post("/v1/chat/completions", json=CHAT, headers={"origin": "https://app.example"})
    exposed = {h.strip() for h in answer.headers["access-control-expose-headers"].split(",")}
    assert {"x-request-id", "retry-after", "x-corral-overhead-ms"} <= exposed
    assert answer.headers["access-control-allow-origin"] == "https://app.example"


async def test_gzip_and_deflate_bodies_are_decoded_and_other_encodings_refused() -> None:
    import orjson

    provider = ScriptedProvider.from_steps("script", [])  # echoes: "You said: ..."
    config = scripted_config(server={"max_body_bytes": 4096})
    async with serve_app(create_app(config, providers={"script": provider})) as url, \
            httpx.AsyncClient(base_url=url) as http:
        body = orjson.dumps(CHAT)
        zipped = await http.post("/v1/chat/completions", content=gzip.compress(body),
                                 headers={"content-type": "application/json", "content-encoding": "gzip"})
        deflated = await http.post("/v1/chat/completions", content=zlib.compress(body),
                                   headers={"content-type": "application/json", "content-encoding": "deflate"})
        brotli = await http.post("/v1/chat/completions", content=body,
                                 headers={"content-type": "application/json", "content-encoding": "br"})
        bomb = await http.post("/v1/chat/completions", content=gzip.compress(b" " * 100_000),
                               headers={"content-type": "application/json", "content-encoding": "gzip"})
        broken = await http.post("/v1/chat/completions", content=b"not gzip at all",
                                 headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert zipped.status_code == 200 and zipped.json()["choices"][0]["message"]["content"] == "You said: hello there"
    assert deflated.status_code == 200
    assert brotli.status_code == 415 and brotli.json()["error"]["code"] == "unsupported_content_encoding"
    assert bomb.status_code == 413 and bomb.json()["error"]["code"] == "request_too_large"
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_body"


async def test_an_unknown_model_name_is_served_by_default_model() -> None:
    provider = ScriptedProvider.from_steps("script", [])
    async with serve_app(create_app(scripted_config(default_model="scripted"), providers={"script": provider})) \
            as url:
        sdk = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        async with sdk:
            reply = await sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "You said: hi"
    assert provider.requests[-1].messages[-1].text_content == "hi"


async def test_without_default_model_an_unknown_name_is_404() -> None:
    async with serve_app(create_app(scripted_config(), providers={"script": ScriptedProvider.from_steps("s", [])})) \
            as url, httpx.AsyncClient(base_url=url) as http:
        answer = await http.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4o"})
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "model_not_found"


async def test_anthropic_routes_carry_request_id() -> None:
    provider = ScriptedProvider.from_steps("script", [ScriptStep(text="hi")])
    async with serve_app(create_app(scripted_config(), providers={"script": provider})) as url:
        async with anthropic.AsyncAnthropic(base_url=url, api_key="x", max_retries=0) as client:
            raw = await client.messages.with_raw_response.create(
                model="scripted", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert raw.request_id is not None and raw.request_id == raw.headers["x-request-id"]


async def test_the_anthropic_sdk_lists_and_retrieves_models_in_its_own_shape() -> None:
    async with serve_app(create_app(scripted_config(), providers={"script": ScriptedProvider.from_steps("s", [])})) \
            as url:
        async with anthropic.AsyncAnthropic(base_url=url, api_key="x", max_retries=0) as client:
            listed = [m async for m in client.models.list()]
            one = await client.models.retrieve("scripted")
        sdk = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        async with sdk:
            openai_listed = [m.id async for m in sdk.models.list()]
    assert [(m.id, m.type) for m in listed] == [("scripted", "model")]
    assert one.id == "scripted" and one.display_name == "scripted" and one.created_at.year >= 2024
    assert openai_listed == ["scripted"]
