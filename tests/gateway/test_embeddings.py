"""`/v1/embeddings` against the official `openai` SDK over a real loopback server."""

from __future__ import annotations

import base64
import math
import struct

import httpx
import pytest

from corral.config.schema import ModelConfig, ProviderConfig

EMBED = {
    "providers": {"script": ProviderConfig(type="scripted")},
    "models": {"scripted": ModelConfig(provider="script", model="scripted"),
               "embedder": ModelConfig(provider="script", model="embed-1", embedding=True)},
}




async def test_list_input_gives_one_unit_vector_per_text_with_usage(client, scripted_server) -> None:
    async with scripted_server(**EMBED) as (base_url, _):
        result = await client(base_url).embeddings.create(
            model="embedder", input=["red apple", "red apple", "blue car"], encoding_format="float")
    assert result.object == "list" and result.model == "embedder"
    assert [d.index for d in result.data] == [0, 1, 2]
    first, same, other = (d.embedding for d in result.data)
    assert len(first) == 64
    assert math.isclose(sum(v * v for v in first), 1.0, rel_tol=1e-6)
    assert first == same and first != other
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (8, 8)  # 3 + 3 + 2 tokens


async def test_string_input_and_sdk_default_base64_decode_to_the_same_vector(client, scripted_server) -> None:
    async with scripted_server(**EMBED) as (base_url, _):
        sdk = client(base_url)
        decoded = await sdk.embeddings.create(model="embedder", input="hello world")  # SDK asks for base64
        async with httpx.AsyncClient(base_url=base_url) as http:
            raw = (await http.post("/v1/embeddings", json={"model": "embedder", "input": "hello world",
                                                           "encoding_format": "base64"})).json()
            floats = (await http.post("/v1/embeddings", json={"model": "embedder", "input": "hello world"})).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(packed) // 4}f", packed)) == pytest.approx(floats["data"][0]["embedding"])
    assert decoded.data[0].embedding == pytest.approx(floats["data"][0]["embedding"])


@pytest.mark.parametrize(("payload", "status", "param"), [
    ({"model": "missing", "input": "x"}, 404, "model"),
    ({"model": "embedder", "input": []}, 400, "input"),
    ({"model": "embedder", "input": [1, 2, 3]}, 400, "input"),
    ({"model": "embedder", "input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
    ({"model": "embedder", "input": "x", "dimensions": 8}, 400, "dimensions"),
])
async def test_bad_requests_get_openai_errors(scripted_server, payload, status, param) -> None:
    async with scripted_server(**EMBED) as (base_url, _), httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post("/v1/embeddings", json=payload)
    assert response.status_code == status
    assert response.json()["error"]["param"] == param
