"""JWT bearer tokens checked against a loopback JWKS server, keys made with `cryptography`."""

from __future__ import annotations

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
