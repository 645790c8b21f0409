"""Who is calling: the master key, virtual keys (stored hashed, cached in memory) and
JWT bearer tokens checked against a JWKS URL.

`Authenticator.authenticate(request)` returns a `Principal` or raises `AuthError`, an
`ApiError` that each API surface renders in its own format. A cached key costs no
database read; the cache is loaded at start, updated by the admin routes, refreshed
periodically and, with a Redis cache URL, invalidated across replicas by pub/sub.

Keys are 32 random bytes, so a plain SHA-256 is enough to make the stored hash
useless to an attacker (there is nothing to brute-force); no pepper to lose or rotate.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from starlette.requests import Request

from corral.config.schema import AuthConfig
from corral.gateway.errors import ApiError
from corral.store import KeyRecord, Store, TeamRecord

if TYPE_CHECKING:
    from corral.gateway.auth_jwt import JWTVerifier
    from corral.gateway.auth_throttle import FailedAuthThrottle

log = logging.getLogger("corral.auth")

KEY_PREFIX = "sk-corral-"
PRINCIPALS_MAX = 10_000


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    """The non-secret part shown in listings: ``sk-corral-AbCd``."""
    return key[: len(KEY_PREFIX) + 4]


class AuthError(ApiError):
    def __init__(self, status: int, message: str, *, code: str | None = None) -> None:
        extra = {"www-authenticate": "Bearer"} if status == 401 else None
        super().__init__(status, message, code=code, headers=extra)


@dataclass(frozen=True, slots=True)
class Principal:
    kind: Literal["anonymous", "master", "static", "key", "jwt"]
    subject: str
    key_id: str | None = None
    team_id: str | None = None
    models: tuple[str, ...] = ()  # empty: every model
    key: KeyRecord | None = None
    team: TeamRecord | None = None  # the key's team, whose budget also applies
    claims: dict[str, Any] = field(default_factory=dict)

    @property
    def is_admin(self) -> bool:
        return self.kind == "master"

    def may_use(self, model: str) -> bool:
        return not self.models or model in self.models


ANONYMOUS = Principal(kind="anonymous", subject="anonymous")
MASTER = Principal(kind="master", subject="master")


def bearer_token(request: Request) -> str | None:
    # Read from the raw ASGI headers (names are lower case there, as `request.headers`
    # assumes too): building the `Headers` object cost more than the rest of the check.
    authorization: bytes | None = None
    api_key: bytes | None = None
    for name, value in request.scope["headers"]:  # the first of each, as `Headers.get` returns
        if name == b"authorization" and authorization is None:
            authorization = value
            if value:
                break  # x-api-key is read only without one
        elif name == b"x-api-key" and api_key is None:
            api_key = value
    if authorization:
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    # The Anthropic SDK sends its key as x-api-key.
    return api_key.decode("latin-1") if api_key else None


class KeyCache:
    """Key hash -> record, for every live key. Misses (a key created on another replica
    a moment ago) fall back to one database read, and unknown hashes are remembered
    briefly so a flood of bad keys does not become a flood of queries."""

    def __init__(self, store: Store, *, negative_ttl: float = 5.0, negative_max: int = 10_000) -> None:
        self.store = store
        self._by_hash: dict[str, KeyRecord] = {}
        self._teams: dict[str, TeamRecord] = {}
        self._team_names: dict[str, TeamRecord] = {}
        self._hash_of: dict[str, str] = {}
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._negative_ttl = negative_ttl
        self._negative_max = negative_max
        self.db_lookups = 0

    def __len__(self) -> int:
        return len(self._by_hash)

    async def load(self) -> None:
        records = await self.store.keys.list()
        self._teams = {t.id: t for t in await self.store.teams.list()}
        self._team_names = {t.name: t for t in self._teams.values()}
        self._by_hash = {r.key_hash: r for r in records}
        self._hash_of = {r.id: r.key_hash for r in records}
        self._unknown.clear()

    def by_id(self, key_id: str) -> KeyRecord | None:
        """A live key from the cache (no database read)."""
        key_hash = self._hash_of.get(key_id)
        return self._by_hash.get(key_hash) if key_hash is not None else None

    def team(self, team_id: str | None) -> TeamRecord | None:
        return self._teams.get(team_id) if team_id is not None else None

    def team_named(self, name: str) -> TeamRecord | None:
        return self._team_names.get(name)

    def put_team(self, team: TeamRecord) -> None:
        self._teams[team.id] = team
        self._team_names[team.name] = team

    async def _ensure_team(self, record: KeyRecord) -> None:
        if record.team_id is not None and record.team_id not in self._teams:
            team = await self.store.teams.get(record.team_id)
            if team is not None:
                self.put_team(team)

    def put(self, record: KeyRecord) -> None:
        self.drop(record.id)
        if not record.revoked:
            self._by_hash[record.key_hash] = record
            self._hash_of[record.id] = record.key_hash
            self._unknown.pop(record.key_hash, None)

    def drop(self, key_id: str) -> None:
        old = self._hash_of.pop(key_id, None)
        if old is not None:
            self._by_hash.pop(old, None)

    async def reload(self, key_id: str) -> KeyRecord | None:
        """Re-read one key (after a change on any replica)."""
        record = await self.store.keys.get(key_id)
        if record is None:
            self.drop(key_id)
        else:
            await self._ensure_team(record)
            self.put(record)
        return record

    async def lookup(self, key_hash: str) -> KeyRecord | None:
        record = self._by_hash.get(key_hash)
        if record is not None:
            return record
        now = time.monotonic()
        seen = self._unknown.get(key_hash)
        if seen is not None and now - seen < self._negative_ttl:
            return None
        self.db_lookups += 1
        record = await self.store.keys.get_by_hash(key_hash)
        if record is None or record.revoked:
            self._unknown[key_hash] = now
            self._unknown.move_to_end(key_hash)
            while len(self._unknown) > self._negative_max:
                self._unknown.popitem(last=False)
            return None
        await self._ensure_team(record)
        self.put(record)
        return record


class Authenticator:
    def __init__(
        self,
        config: AuthConfig,
        *,
        master_key: str | None = None,
        keys: KeyCache | None = None,
        jwt: JWTVerifier | None = None,
        throttle: FailedAuthThrottle | None = None,
    ) -> None:
        self.config = config
        self.throttle = throttle
        self.master_key = master_key
        self._master = master_key.encode() if master_key else None
        self.keys = keys
        self.jwt = jwt
        # Key id -> the principal of its cached record (and team): one object per key, not per call.
        self._principals: dict[str, Principal] = {}
        # Static keys from the config (``auth.api_keys``), by hash so comparison leaks nothing.
        self._static = {hash_key(k.get_secret_value()): i for i, k in enumerate(config.api_keys)}
        configured = bool(master_key) or jwt is not None or bool(self._static)
        self.required = configured if config.required is None else config.required
        self._public = tuple(config.public_paths)

    def is_public(self, path: str) -> bool:
        return any(path == p or (p.endswith("/*") and path.startswith(p[:-1])) for p in self._public)

    async def authenticate(self, request: Request) -> Principal:
        token = bearer_token(request)
        if token is None:
            if not self.required or self.is_public(request.url.path):
                return ANONYMOUS
            raise AuthError(401, "Missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key")
        if self.throttle is None:
            return await self.authenticate_token(token)
        client = request.client.host if request.client else ""
        try:
            principal = await self.authenticate_token(token)
        except AuthError:
            await self.throttle.penalize(client)  # guessing keys from one address turns into a crawl
            raise
        self.throttle.succeeded(client)
        return principal

    async def authenticate_token(self, token: str) -> Principal:
        if self._master is not None and hmac.compare_digest(token.encode(), self._master):
            return MASTER
        index = self._static.get(hash_key(token)) if self._static else None
        if index is not None:
            return Principal(kind="static", subject=f"api_keys[{index}]")
        if token.startswith(KEY_PREFIX) and self.keys is not None:
            return await self._virtual_key(token)
        if self.jwt is not None and token.count(".") == 2:
            return self._with_team(await self.jwt.verify(token))
        if not self.required:
            return ANONYMOUS
        raise AuthError(401, "Invalid API key", code="invalid_api_key")

    async def _virtual_key(self, token: str) -> Principal:
        assert self.keys is not None
        record = await self.keys.lookup(hash_key(token))
        if record is None:
            raise AuthError(401, "Invalid API key", code="invalid_api_key")
        if record.expires_at is not None and record.expired(datetime.now(UTC)):
            raise AuthError(401, "This API key has expired", code="expired_api_key")
        if record.disabled:
            raise AuthError(401, "This API key is disabled", code="disabled_api_key")
        team = self.keys.team(record.team_id)
        principal = self._principals.get(record.id)
        # Records are immutable and replaced on every change: the same objects, the same principal.
        if principal is None or principal.key is not record or principal.team is not team:
            principal = Principal(
                kind="key", subject=record.name or record.id, key_id=record.id, team_id=record.team_id,
                models=record.models, key=record, team=team,
            )
            if len(self._principals) >= PRINCIPALS_MAX:
                self._principals.clear()
            self._principals[record.id] = principal
        return principal

    def _with_team(self, principal: Principal) -> Principal:
        """A JWT's team claim naming a team made with the admin API (by id or name) gets that
        team's record, so its budget is shared with the team's keys."""
        if principal.team_id is None or self.keys is None:
            return principal
        team = self.keys.team(principal.team_id) or self.keys.team_named(principal.team_id)
        return replace(principal, team_id=team.id, team=team) if team is not None else principal

    def check_model(self, principal: Principal, model: str) -> None:
        if not principal.may_use(model):
            raise AuthError(403, f"This key may not use the model '{model}'", code="model_not_allowed")
