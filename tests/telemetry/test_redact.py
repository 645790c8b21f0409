"""Corral's one redactor (`corral.telemetry.redact`): the union of the rules the logs,
`config show`, service addresses, upstream error messages and audit records each had."""

from __future__ import annotations

from pydantic import SecretStr

from corral.telemetry.redact import MASK, REDACTED, is_secret_key, redact_text, redact_url, redact_value


def test_free_text_masks_known_secrets_then_everything_shaped_like_one() -> None:
    text = ("key sk-live-opaque-1234 rejected\nAuthorization: Bearer abc.def\ndsn postgresql://app:hunter2@db/x\n"
            "slack xoxb-123456789-abcdef, aws AKIAABCDEFGHIJKLMNOP, password=pw1&next=1")
    assert redact_text(text, known=("opaque-1234", None, "")).split("\n") == [
        f"key sk-live-{MASK} rejected", f"Authorization: {REDACTED}", f"dsn postgresql://app:{REDACTED}@db/x",
        f"slack {REDACTED}, aws {REDACTED}, password={REDACTED}&next=1"]
    assert redact_text("key sk-live-opaque-1234 rejected") == f"key sk-{REDACTED} rejected"
    assert redact_text("upstream said: bad key my-own-key-value", known=("my-own-key-value",)) == (
        f"upstream said: bad key {MASK}")
    assert redact_text("plain: max_tokens=5, https://example.com/a@b") == (
        "plain: max_tokens=5, https://example.com/a@b")


def test_urls_keep_everything_but_the_password() -> None:
    assert redact_url("postgresql://app:pw@db.internal:5433/corral") == f"postgresql://app:{MASK}@db.internal:5433/corral"
    assert redact_url("redis://:pw@[::1]:6380/2") == f"redis://:{MASK}@[::1]:6380/2"
    assert redact_url("https://user@host/x") == "https://user@host/x"  # no password
    assert redact_url("not a url @ all") == "not a url @ all"


def test_structured_values_by_key_and_by_type() -> None:
    data = {"api_key": "k", "headers": {"Proxy-Authorization": "Basic x", "Accept": "json"},
            "db_password": "p", "private_key": "-----BEGIN", "max_tokens": 5, "token_budget": {"limit": 9},
            "key": SecretStr("s"), "empty": SecretStr(""), "urls": ["postgresql://u:p@h/db"], "enabled": True}
    assert redact_value(data) == {
        "api_key": MASK, "headers": {"Proxy-Authorization": MASK, "Accept": "json"}, "db_password": MASK,
        "private_key": MASK, "max_tokens": 5, "token_budget": {"limit": 9}, "key": MASK, "empty": "",
        "urls": [f"postgresql://u:{MASK}@h/db"], "enabled": True}
    assert [name for name in ("x-goog-api-key", "Cookie", "slack_token", "passwd", "author", "tokens")
            if is_secret_key(name)] == ["x-goog-api-key", "Cookie", "slack_token", "passwd"]
