"""JWT bearer tokens checked against a loopback JWKS server, keys made with `cryptography`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import openai
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from tests.gateway.conftest import ServerFactory

from corral.config.schema import JWTConfig
from corral.gateway.auth import AuthError
from corral.gateway.auth_jwt import JWTVerifier
from corral.testing.server import serve_app

ISSUER = "https://issuer.test"
AUDIENCE = "corral"


class Issuer:
    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.fetches = 0
        self.add("k1")

    def add(self, kid: str, kind: str = "rsa") -> None:
        if kind == "rsa":
            self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self.keys[kid] = ec.generate_private_key(ec.SECP256R1())

    def jwks(self) -> dict[str, Any]:
        entries = []
        for kid, key in self.keys.items():
            algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
            entry = algorithm.to_jwk(key.public_key(), as_dict=True)
            entries.append({**entry, "kid": kid, "use": "sig"})
        return {"keys": entries}

    def token(self, kid: str = "k1", **claims: Any) -> str:
        key = self.keys[kid]
        algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "ana@example.com", "exp": int(time.time()) + 300, **claims}
        return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid})


@pytest.fixture
async def issuer() -> AsyncIterator[tuple[Issuer, str]]:
    state = Issuer()

    async def jwks(_: Request) -> JSONResponse:
        state.fetches += 1
        return JSONResponse(state.jwks())

    async with serve_app(Starlette(routes=[Route("/.well-known/jwks.json", jwks)])) as base_url:
        yield state, f"{base_url}/.well-known/jwks.json"


def verifier(url: str, **overrides: Any) -> JWTVerifier:
    config = JWTConfig(jwks_url=url, issuer=ISSUER, audience=AUDIENCE)
    return JWTVerifier(config, **overrides)


async def test_a_valid_token_gives_a_principal_with_its_claims(issuer: tuple[Issuer, str]) -> None:
    state, url = issuer
    check = verifier(url)
    try:
        principal = await check.verify(state.token(models=["chat"], team="research"))
        assert (principal.kind, principal.subject, principal.team_id) == ("jwt", "ana@example.com", "research")
        assert principal.models == ("chat",)
        await check.verify(state.token())
        assert state.fetches == 1  # keys are cached
    finally:
        await check.aclose()


@pytest.mark.parametrize(
    ("claims", "code", "fragment"),
    [
        ({"aud": "someone-else"}, "invalid_token", "audience"),
        ({"iss": "https://evil.test"}, "invalid_token", "issuer"),
        ({"exp": int(time.time()) - 3600}, "expired_token", "expired"),
    ],
)
async def test_wrong_audience_issuer_or_expiry_is_refused(
    issuer: tuple[Issuer, str], claims: dict[str, Any], code: str, fragment: str
) -> None:
    state, url = issuer
    check = verifier(url)
    try:
        with pytest.raises(AuthError) as caught:
            await check.verify(state.token(**claims))
        assert caught.value.status == 401 and caught.value.code == code
        assert fragment in caught.value.message.lower()
    finally:
        await check.aclose()


async def test_unknown_kid_refreshes_the_keys_once_then_is_rate_limited(issuer: tuple[Issuer, str]) -> None:
    state, url = issuer
    check = verifier(url, min_refresh_seconds=0.0)
    try:
        await check.verify(state.token())
        state.add("k2", kind="ec")  # the issuer rotates in a new key
        principal = await check.verify(state.token("k2"))
        assert principal.subject == "ana@example.com" and state.fetches == 2
    finally:
        await check.aclose()
    slow = verifier(url, min_refresh_seconds=60.0)
    try:
        await slow.verify(state.token())
        fetches = state.fetches
        forged = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60}, "secret" * 8,
                            algorithm="HS256", headers={"kid": "made-up"})
        for _ in range(5):
            with pytest.raises(AuthError):
                await slow.verify(forged)
        assert state.fetches == fetches  # made-up kids do not hammer the issuer
    finally:
        await slow.aclose()


async def test_a_token_signed_by_another_key_is_refused(issuer: tuple[Issuer, str]) -> None:
    _, url = issuer
    check = verifier(url)
    try:
        impostor = Issuer()
        with pytest.raises(AuthError) as caught:
            await check.verify(impostor.token("k1"))
        assert caught.value.code == "invalid_token"
    finally:
        await check.aclose()


async def test_gateway_accepts_jwt_bearer_tokens_on_the_chat_route(
    issuer: tuple[Issuer, str], scripted_server: ServerFactory
) -> None:
    state, url = issuer
    auth = {"jwt": {"jwks_url": url, "issuer": ISSUER, "audience": AUDIENCE}}
    async with scripted_server(auth=auth) as (base_url, _):
        async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=state.token(), max_retries=0) as sdk:
            reply = await sdk.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content
        async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="not-a-token", max_retries=0) as sdk:
            with pytest.raises(openai.AuthenticationError):
                await sdk.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}])


MASTER = "sk-master-jwt-limits-0123456789"
PRICES = {"scripted": {"input": 1000, "output": 2000}}
HI = [{"role": "user", "content": "hi"}]


def jwt_auth(url: str, **settings: Any) -> dict[str, Any]:
    return {"master_key": MASTER, "jwt": {"jwks_url": url, "issuer": ISSUER, "audience": AUDIENCE, **settings}}


def sdk(base_url: str, token: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=token, max_retries=0)


async def test_a_jwt_subject_over_its_rpm_gets_429_in_the_openai_format(
    issuer: tuple[Issuer, str], scripted_server: ServerFactory
) -> None:
    state, url = issuer
    async with scripted_server(auth=jwt_auth(url, limits={"rpm": 2})) as (base_url, _), \
            sdk(base_url, state.token()) as ana, sdk(base_url, state.token(sub="bob@example.com")) as bob:
        for _ in range(2):
            await ana.chat.completions.create(model="scripted", messages=HI)
        with pytest.raises(openai.RateLimitError) as caught:
            await ana.chat.completions.create(model="scripted", messages=HI)
        other = await bob.chat.completions.create(model="scripted", messages=HI)  # limits are per subject
    assert caught.value.status_code == 429 and caught.value.code == "rate_limit_exceeded"
    assert caught.value.body == {"message": "Rate limit exceeded: 2 requests per minute for this caller",
                                 "type": "rate_limit_error", "param": None, "code": "rate_limit_exceeded"}
    assert 0 < int(caught.value.response.headers["retry-after"]) <= 60
    assert other.choices[0].message.content


async def test_a_spent_jwt_budget_blocks_and_the_usage_is_recorded_against_the_subject(
    issuer: tuple[Issuer, str], scripted_server: ServerFactory
) -> None:
    state, url = issuer
    auth = jwt_auth(url, limits={"max_budget": 0.000001, "budget_duration": "1d"})
    async with scripted_server(auth=auth, pricing=PRICES) as (base_url, _), \
            sdk(base_url, state.token()) as ana, sdk(base_url, state.token(sub="bob@example.com")) as bob:
        await ana.chat.completions.create(model="scripted", messages=HI)
        with pytest.raises(openai.APIStatusError) as caught:
            await ana.chat.completions.create(model="scripted", messages=HI)
        await bob.chat.completions.create(model="scripted", messages=HI)
        import httpx

        async with httpx.AsyncClient(base_url=base_url, headers={"authorization": f"Bearer {MASTER}"}) as api:
            for _ in range(100):
                report = (await api.get("/admin/spend", params={"group_by": "subject"})).json()
                if sum(r["requests"] for r in report["data"]) >= 2:
                    break
                await asyncio.sleep(0.05)
    assert caught.value.status_code == 402 and caught.value.code == "budget_exceeded"
    assert caught.value.type == "insufficient_quota" and "the budget of this caller" in caught.value.message
    by_subject = {r["subject"]: r for r in report["data"]}
    assert set(by_subject) == {"ana@example.com", "bob@example.com"}
    assert by_subject["ana@example.com"]["requests"] == 1 and by_subject["ana@example.com"]["cost_usd"] > 0.000001


async def test_jwt_teams_share_limits_and_a_team_made_with_the_admin_api_brings_its_budget(
    issuer: tuple[Issuer, str], scripted_server: ServerFactory
) -> None:
    import httpx

    state, url = issuer
    auth = jwt_auth(url, team_claim="groups", team_limits={"rpm": 2})
    async with scripted_server(auth=auth, pricing=PRICES) as (base_url, _), \
            httpx.AsyncClient(base_url=base_url, headers={"authorization": f"Bearer {MASTER}"}) as api:
        team = (await api.post("/admin/teams", json={"name": "research", "max_budget": 0.000001})).json()
        tokens = {name: state.token(sub=name, groups=[group]) for name, group in
                  [("ana", "research"), ("bob", "research"), ("carol", "ops"), ("dave", "ops")]}
        async with sdk(base_url, tokens["ana"]) as ana, sdk(base_url, tokens["bob"]) as bob:
            await ana.chat.completions.create(model="scripted", messages=HI)
            with pytest.raises(openai.APIStatusError) as spent:
                await bob.chat.completions.create(model="scripted", messages=HI)
        async with sdk(base_url, tokens["carol"]) as carol, sdk(base_url, tokens["dave"]) as dave:
            await carol.chat.completions.create(model="scripted", messages=HI)
            await dave.chat.completions.create(model="scripted", messages=HI)
            with pytest.raises(openai.RateLimitError) as limited:
                await carol.chat.completions.create(model="scripted", messages=HI)
        listed = {t["name"]: t for t in (await api.get("/admin/teams")).json()["data"]}
    assert spent.value.status_code == 402 and "this caller's team" in spent.value.message
    assert listed["research"]["id"] == team["id"] and listed["research"]["spend"] > 0.000001
    assert limited.value.message.endswith("Rate limit exceeded: 2 requests per minute for this caller's team")


async def test_a_jwt_subjects_stored_spend_counts_after_a_restart(issuer: tuple[Issuer, str], tmp_path: Any) -> None:
    from tests.gateway.conftest import scripted_config

    from corral.gateway.app import create_app
    from corral.store import Store, UsageRecord
    from corral.testing.scripted import ScriptedProvider

    state, url = issuer
    config = scripted_config(auth=jwt_auth(url, limits={"max_budget": 1.0, "budget_duration": "1d"}),
                             database={"url": f"sqlite:///{tmp_path / 'c.db'}"})
    store = await Store.open(config.database.url)  # spend of an earlier process, on this same day
    await store.usage.insert_many([UsageRecord(request_id="old", model="scripted", subject="ana@example.com",
                                               cost_usd=1.5)])
    await store.aclose()
    app = create_app(config, providers={"script": ScriptedProvider.from_steps("script", [])})
    async with serve_app(app) as base_url, sdk(base_url, state.token()) as ana, \
            sdk(base_url, state.token(sub="bob@example.com")) as bob:
        with pytest.raises(openai.APIStatusError) as caught:
            await ana.chat.completions.create(model="scripted", messages=HI)
        await bob.chat.completions.create(model="scripted", messages=HI)
    assert caught.value.status_code == 402 and caught.value.code == "budget_exceeded"
