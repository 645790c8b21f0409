"""JWT bearer tokens checked against a JWKS URL.

Keys are fetched with httpx (never blocking the event loop), cached for
``cache_seconds``, and fetched again when a token names a kid we have not seen (the
issuer rotated its keys) — at most once per ``min_refresh_seconds`` so that tokens
with made-up kids cannot turn into a flood of JWKS requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
import jwt

from corral.config.schema import JWTConfig
from corral.gateway.auth import AuthError, Principal

log = logging.getLogger("corral.auth")


class JWTVerifier:
    def __init__(
        self, config: JWTConfig, *, client: httpx.AsyncClient | None = None, min_refresh_seconds: float = 10.0
    ) -> None:
        self.config = config
        self._client = client or httpx.AsyncClient(timeout=10.0)
        self._own_client = client is None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._min_refresh = min_refresh_seconds
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError(401, "Malformed bearer token", code="invalid_token") from None
        key = await self._key_for(header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=self.config.algorithms,
                audience=self.config.audience,
                issuer=self.config.issuer,
                options={"require": ["exp"], "verify_aud": self.config.audience is not None},
                leeway=30,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "The bearer token has expired", code="expired_token") from None
        except jwt.PyJWTError as exc:
            raise AuthError(401, f"Invalid bearer token: {exc}", code="invalid_token") from None
        subject = str(claims.get(self.config.subject_claim) or claims.get("sub") or "jwt")
        models = claims.get("models")
        team = claims.get(self.config.team_claim)
        if isinstance(team, list):  # a groups-style claim: the first group is the team
            team = team[0] if team else None
        return Principal(
            kind="jwt",
            subject=subject,
            team_id=str(team) if team not in (None, "") else None,
            models=tuple(str(m) for m in models) if isinstance(models, list) else (),
            claims=claims,
        )

    async def _key_for(self, kid: str | None) -> jwt.PyJWK:
        now = time.monotonic()
        stale = now - self._fetched_at > self.config.cache_seconds
        unknown = kid is None or kid not in self._keys
        if stale or (unknown and now - self._fetched_at > self._min_refresh):
            await self._refresh(force=stale)
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        found = self._keys.get(kid) if kid is not None else None
        if found is None:
            raise AuthError(401, "The bearer token is signed by an unknown key", code="invalid_token")
        return found

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            if not force and time.monotonic() - self._fetched_at <= self._min_refresh:
                return  # another request refreshed while we waited
            try:
                response = await self._client.get(self.config.jwks_url)
                response.raise_for_status()
                document = response.json()
            except (httpx.HTTPError, json.JSONDecodeError) as exc:
                log.warning("JWKS fetch from %s failed: %s", self.config.jwks_url, exc)
                self._fetched_at = time.monotonic() - self.config.cache_seconds + self._min_refresh
                if not self._keys:
                    raise AuthError(503, "Cannot fetch the signing keys to check the bearer token",
                                    code="jwks_unavailable") from None
                return
            self.fetches += 1
            self._keys = _parse_jwks(document)
            self._fetched_at = time.monotonic()


def _parse_jwks(document: Any) -> dict[str, jwt.PyJWK]:
    keys: dict[str, jwt.PyJWK] = {}
    for index, entry in enumerate(document.get("keys", []) if isinstance(document, dict) else []):
        if entry.get("use", "sig") != "sig":
            continue
        try:
            keys[str(entry.get("kid", index))] = jwt.PyJWK(entry)
        except jwt.PyJWTError as exc:
            log.warning("skipping JWKS key %s: %s", entry.get("kid"), exc)
    return keys
