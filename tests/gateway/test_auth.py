"""Auth on the model routes: master key, virtual keys (admin API), JWT via JWKS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anthropic
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion
from tests.gateway.conftest import ServerFactory, scripted_config

from corral.gateway.app import create_app
from corral.testing.scripted import ScriptedProvider
from corral.testing.server import serve_app

MASTER = "sk-master-test-0123456789"
MESSAGES = [{"role": "user", "content": "hi"}]


def admin(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, headers={"authorization": f"Bearer {MASTER}"}, timeout=10)


async def ask(base_url: str, key: str, model: str = "scripted") -> ChatCompletion:
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0) as sdk:
        return await sdk.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]


async def test_without_a_key_the_chat_route_answers_401_in_openai_format(scripted_server: ServerFactory) -> None:
    async with scripted_server(auth={"master_key": MASTER}) as (base_url, _):
        with pytest.raises(openai.AuthenticationError) as caught:
            await ask(base_url, "sk-wrong")
        assert caught.value.status_code == 401
        assert caught.value.body["code"] == "invalid_api_key"  # type: ignore[index]
        async with httpx.AsyncClient() as raw:
            missing = await raw.post(f"{base_url}/v1/chat/completions", json={"model": "scripted", "messages": MESSAGES})
        assert missing.status_code == 401
        assert missing.json()["error"]["type"] == "authentication_error"
        ok = await ask(base_url, MASTER)
        assert ok.choices[0].message.content


async def test_anthropic_surface_renders_401_in_anthropic_format(scripted_server: ServerFactory) -> None:
    async with scripted_server(auth={"master_key": MASTER}) as (base_url, _):
        async with anthropic.AsyncAnthropic(base_url=base_url, api_key="sk-nope", max_retries=0) as sdk:
            with pytest.raises(anthropic.AuthenticationError) as caught:
                await sdk.messages.create(model="scripted", max_tokens=10, messages=MESSAGES)  # type: ignore[arg-type]
        assert caught.value.body == {"type": "error", "error": {"type": "authentication_error",
                                                                 "message": "Invalid API key"}}
        async with anthropic.AsyncAnthropic(base_url=base_url, api_key=MASTER, max_retries=0) as good:
            reply = await good.messages.create(model="scripted", max_tokens=10, messages=MESSAGES)  # type: ignore[arg-type]
        assert reply.content


async def test_virtual_key_lifecycle_create_use_rotate_revoke(scripted_server: ServerFactory) -> None:
    async with scripted_server(auth={"master_key": MASTER}) as (base_url, _), admin(base_url) as api:
        created = await api.post("/admin/keys", json={"name": "ci", "models": ["scripted"], "metadata": {"team": "x"}})
        assert created.status_code == 201
        body = created.json()
        key = body["key"]
        assert key.startswith("sk-corral-") and body["key_prefix"] == key[:14]
        listed = (await api.get("/admin/keys")).json()["data"]
        assert [k["id"] for k in listed] == [body["id"]] and "key" not in listed[0]

        answer = await ask(base_url, key)
        assert answer.choices[0].message.content

        rotated = (await api.post(f"/admin/keys/{body['id']}/rotate")).json()
        assert rotated["id"] == body["id"] and rotated["key"] != key
        with pytest.raises(openai.AuthenticationError):
            await ask(base_url, key)
        new_key = rotated["key"]
        await ask(base_url, new_key)

        revoked = await api.delete(f"/admin/keys/{body['id']}")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        with pytest.raises(openai.AuthenticationError):
            await ask(base_url, new_key)
        assert (await api.get("/admin/keys")).json()["data"] == []
        assert len((await api.get("/admin/keys?include_revoked=true")).json()["data"]) == 1


async def test_key_limited_to_some_models_gets_403_on_others(scripted_server: ServerFactory) -> None:
    async with scripted_server(auth={"master_key": MASTER}) as (base_url, _), admin(base_url) as api:
        key = (await api.post("/admin/keys", json={"models": ["other"]})).json()["key"]
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await ask(base_url, key)
        assert caught.value.body["code"] == "model_not_allowed"  # type: ignore[index]


async def test_expired_key_is_refused(scripted_server: ServerFactory) -> None:
    async with scripted_server(auth={"master_key": MASTER}) as (base_url, _), admin(base_url) as api:
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        key = (await api.post("/admin/keys", json={"expires_at": past})).json()["key"]
        with pytest.raises(openai.AuthenticationError) as caught:
            await ask(base_url, key)
        assert caught.value.body["code"] == "expired_api_key"  # type: ignore[index]


async def test_a_cached_key_costs_no_database_read() -> None:
    provider = ScriptedProvider.from_steps("script", [])
    app = create_app(scripted_config(auth={"master_key": MASTER}), providers={"script": provider})
    async with serve_app(app) as base_url, admin(base_url) as api:
        key = (await api.post("/admin/keys", json={})).json()["key"]
        for _ in range(5):
            await ask(base_url, key)
        keys = app.state.gateway.authenticator.keys
        assert keys.db_lookups == 0
        with pytest.raises(openai.AuthenticationError):
            await ask(base_url, "sk-corral-unknown")
        with pytest.raises(openai.AuthenticationError):
            await ask(base_url, "sk-corral-unknown")
        assert keys.db_lookups == 1  # the miss is remembered


async def test_admin_routes_refuse_virtual_keys_and_anonymous(scripted_server: ServerFactory) -> None:
    async with scripted_server(auth={"master_key": MASTER}) as (base_url, _), admin(base_url) as api:
        key = (await api.post("/admin/keys", json={})).json()["key"]
        async with httpx.AsyncClient(base_url=base_url) as raw:
            assert (await raw.get("/admin/keys")).status_code == 401
            refused = await raw.get("/admin/keys", headers={"authorization": f"Bearer {key}"})
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
        bad = await api.post("/admin/keys", json={"budget_duration": "sometimes"})
        assert bad.status_code == 400 and "budget_duration" in bad.json()["error"]["message"]
        unknown = await api.post("/admin/keys", json={"colour": "red"})
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "colour"


async def test_static_api_keys_from_the_config_may_call_models_but_not_admin(scripted_server: ServerFactory) -> None:
    async with scripted_server(auth={"api_keys": ["sk-static-one", "sk-static-two"]}) as (base_url, _):
        answer = await ask(base_url, "sk-static-two")
        assert answer.choices[0].message.content
        with pytest.raises(openai.AuthenticationError):
            await ask(base_url, "sk-static-three")
        async with httpx.AsyncClient(base_url=base_url) as raw:
            refused = await raw.get("/admin/keys", headers={"authorization": "Bearer sk-static-one"})
        assert refused.status_code == 403


async def test_non_model_routes_need_a_key_too_and_public_paths_stay_open(scripted_server: ServerFactory) -> None:
    async with scripted_server(auth={"master_key": MASTER}) as (base_url, _):
        async with httpx.AsyncClient(base_url=base_url) as anonymous, admin(base_url) as keyed:
            for path in ("/v1/models", "/v1/models/scripted", "/metrics", "/v1/startup/verification"):
                refused = await anonymous.get(path)
                assert refused.status_code == 401, path
                assert refused.json()["error"]["code"] == "missing_api_key"
                assert (await keyed.get(path)).status_code == 200, path
            for path in ("/health", "/healthz", "/readyz"):
                assert (await anonymous.get(path)).status_code == 200, path
