"""The authenticator's per-request shortcuts: the token read from the raw ASGI headers,
and one principal per cached key record, which must never outlive a change to the key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.requests import Request

from corral.config.schema import AuthConfig
from corral.gateway.auth import Authenticator, AuthError, KeyCache, bearer_token, generate_key, hash_key
from corral.store import KeyRecord, Store, TeamRecord


def request(*headers: tuple[bytes, bytes]) -> Request:
    return Request({"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": list(headers)})


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        ([(b"authorization", b"Bearer  sk-a ")], "sk-a"),
        ([(b"authorization", b"bearer sk-a")], "sk-a"),
        ([(b"x-api-key", b"sk-b"), (b"authorization", b"Bearer sk-a")], "sk-a"),  # authorization wins
        ([(b"authorization", b"Basic dXNlcg=="), (b"x-api-key", b"sk-b")], None),  # no fallback past it
        ([(b"authorization", b""), (b"x-api-key", b"sk-b")], "sk-b"),
        ([(b"authorization", b"Bearer   ")], None),
        ([(b"x-api-key", b"")], None),
        ([(b"content-type", b"application/json")], None),
        ([(b"authorization", b""), (b"authorization", b"Bearer sk-a"), (b"x-api-key", b"sk-b")], "sk-b"),
        ([(b"x-api-key", b"sk-b"), (b"x-api-key", b"sk-c")], "sk-b"),
    ],
)
def test_the_token_is_read_like_starlette_headers_would(headers: list[tuple[bytes, bytes]], token: str | None) -> None:
    assert bearer_token(request(*headers)) == token == through_starlette_headers(request(*headers))


def through_starlette_headers(request: Request) -> str | None:
    """What `bearer_token` did before it read the raw headers."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return request.headers.get("x-api-key") or None


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(f"sqlite:///{tmp_path / 'corral.db'}")
    try:
        yield opened
    finally:
        await opened.aclose()


async def test_a_key_change_takes_effect_on_the_next_call_despite_the_cached_principal(store: Store) -> None:
    token = generate_key()
    await store.teams.create(TeamRecord(id="t1", name="research", max_budget=5.0))
    await store.keys.create(KeyRecord(id="k1", key_hash=hash_key(token), key_prefix=token[:14], name="ci",
                                      team_id="t1", models=("a",)))
    keys = KeyCache(store)
    await keys.load()
    auth = Authenticator(AuthConfig(), master_key="sk-master", keys=keys)

    first = await auth.authenticate_token(token)
    assert first.kind == "key" and first.key_id == "k1" and first.models == ("a",)
    assert first.team is not None and first.team.max_budget == 5.0
    assert await auth.authenticate_token(token) is first  # unchanged records: the same principal

    await store.keys.update("k1", {"models": ["a", "b"]})
    await keys.reload("k1")
    widened = await auth.authenticate_token(token)
    assert widened.models == ("a", "b") and widened.key is keys.by_id("k1")

    keys.put_team(TeamRecord(id="t1", name="research", max_budget=9.0))
    assert (await auth.authenticate_token(token)).team.max_budget == 9.0  # type: ignore[union-attr]

    await store.keys.update("k1", {"expires_at": datetime.now(UTC) - timedelta(seconds=1)})
    await keys.reload("k1")
    with pytest.raises(AuthError, match="expired"):
        await auth.authenticate_token(token)

    await store.keys.update("k1", {"expires_at": None, "disabled_at": datetime.now(UTC)})
    await keys.reload("k1")
    with pytest.raises(AuthError, match="disabled"):
        await auth.authenticate_token(token)

    await store.keys.update("k1", {"disabled_at": None})
    await keys.reload("k1")
    assert (await auth.authenticate_token(token)).key_id == "k1"
    await store.keys.revoke("k1")
    await keys.reload("k1")
    with pytest.raises(AuthError, match="Invalid API key"):
        await auth.authenticate_token(token)


async def test_the_master_key_is_compared_whole() -> None:
    auth = Authenticator(AuthConfig(), master_key="sk-master-0123")
    assert (await auth.authenticate_token("sk-master-0123")).is_admin
    for wrong in ("sk-master-012", "sk-master-01234", "SK-MASTER-0123"):
        with pytest.raises(AuthError, match="Invalid API key"):
            await auth.authenticate_token(wrong)
