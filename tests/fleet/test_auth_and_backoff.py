from __future__ import annotations

import itertools
import random
import time

import pytest

from corral.fleet.backoff import Backoff
from corral.fleet.supervisor.auth import TokenSet, bearer, origin_allowed
from corral.telemetry.redact import MASK, REDACTED, redact_value


def test_backoff_grows_from_100ms_to_a_60s_cap_with_jitter() -> None:
    b = Backoff(rng=random.Random(1))
    delays = [b.next() for _ in range(15)]
    assert 0.075 <= delays[0] <= 0.125
    assert all(later >= earlier * 1.2 for earlier, later in itertools.pairwise(delays[:9]))
    assert max(delays) <= 60.0 and delays[-1] >= 45.0
    b.reset()
    assert b.next() <= 0.125


def test_rotated_token_keeps_working_only_for_the_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = TokenSet("old-token-0123456789", overlap_seconds=30)
    assert tokens.rotate("new-token-0123456789") is True
    assert tokens.valid("old-token-0123456789") and tokens.valid("new-token-0123456789")
    later = time.monotonic() + 31
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert not tokens.valid("old-token-0123456789")
    assert tokens.valid("new-token-0123456789")
    assert not tokens.valid(None) and not tokens.valid("")


def test_bearer_header_parsing() -> None:
    assert bearer("Bearer abc") == "abc"
    assert bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None and bearer(None) is None and bearer("Bearer ") is None


def test_origin_allowlist_applies_to_browsers_not_to_nodes_without_origin() -> None:
    allow = ["https://ops.example.com", "http://localhost:*"]
    assert origin_allowed(None, []) is True
    assert origin_allowed("https://ops.example.com", allow)
    assert origin_allowed("http://localhost:5173", allow)
    assert not origin_allowed("https://evil.example", allow)
    assert not origin_allowed("https://evil.example", [])


def test_redaction_hides_secret_keys_and_token_shaped_values() -> None:
    args = {"api_key": "sk-abcdef123456", "nested": {"password": "p"}, "message": "use Bearer abcdefghijkl now",
            "prompt": "hello"}
    out = redact_value(args)
    assert out["api_key"] == MASK and out["nested"]["password"] == MASK
    assert out["message"] == f"use Bearer {REDACTED} now" and out["prompt"] == "hello"
