"""Shared-token auth with a rotation overlap, and the Origin allowlist."""

from __future__ import annotations

import fnmatch
import hmac
import time


class TokenSet:
    """The current token plus recently replaced ones, valid until their overlap ends."""

    def __init__(self, token: str, overlap_seconds: float = 300.0) -> None:
        self._current = token
        self._previous: dict[str, float] = {}
        self.overlap = overlap_seconds

    def rotate(self, token: str) -> bool:
        if hmac.compare_digest(token.encode(), self._current.encode()):
            return False
        self._previous[self._current] = time.monotonic() + self.overlap
        self._current = token
        return True

    def valid(self, presented: str | None) -> bool:
        if not presented:
            return False
        now = time.monotonic()
        self._previous = {t: until for t, until in self._previous.items() if until > now}
        candidates = [self._current, *self._previous]
        # compare against every candidate so timing says nothing about which matched
        return any([hmac.compare_digest(presented.encode(), c.encode()) for c in candidates])


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def origin_allowed(origin: str | None, allowlist: list[str]) -> bool:
    """Nodes send no Origin and are always let through (the token guards them); a browser
    sends one, which must match a pattern like ``https://ops.example.com`` or ``http://localhost:*``."""
    if origin is None:
        return True
    return any(fnmatch.fnmatchcase(origin.lower(), pattern.lower()) for pattern in allowlist)
