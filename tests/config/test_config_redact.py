"""Secrets never reach printed config: SecretStr fields, secret-named keys, URL passwords."""

from __future__ import annotations

from pydantic import SecretStr

from corral.config.redact import MASK, redact, redacted_dump
from corral.config.schema import CorralConfig


def test_secret_str_secret_named_keys_and_auth_headers_are_masked() -> None:
    data = {
        "api_key": SecretStr("sk-1"),
        "empty": SecretStr(""),
        "params": {"password": "p", "db_password": "q", "client_secret": "s", "top_p": 0.9},
        "headers": {"Authorization": "Bearer t", "X-Api-Key": "k", "Proxy-Authorization": "b", "Accept": "json"},
        "token": None,
    }
    assert redact(data) == {
        "api_key": MASK,
        "empty": "",
        "params": {"password": MASK, "db_password": MASK, "client_secret": MASK, "top_p": 0.9},
        "headers": {"Authorization": MASK, "X-Api-Key": MASK, "Proxy-Authorization": MASK, "Accept": "json"},
        "token": None,
    }


def test_passwords_inside_urls_are_masked_and_the_rest_kept() -> None:
    assert redact("postgresql://corral:s3cr%40t@db:5432/corral?sslmode=require") == (
        "postgresql://corral:***@db:5432/corral?sslmode=require"
    )
    assert redact("redis://:pw@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact("https://user@host/path") == "https://user@host/path"  # no password, nothing to hide
    assert redact("http://[bad") == "http://[bad"
    assert redact(["a@b", "plain"]) == ["a@b", "plain"]


def test_redacted_dump_of_a_config_is_plain_data_with_masks() -> None:
    config = CorralConfig.model_validate({
        "providers": {"o": {"api_key": "sk-x", "headers": {"api-key": "az"}}},
        "auth": {"master_key": "mk"},
    })
    dumped = redacted_dump(config)
    assert dumped["providers"]["o"]["api_key"] == MASK
    assert dumped["providers"]["o"]["headers"] == {"api-key": MASK}
    assert dumped["auth"]["master_key"] == MASK
    assert "sk-x" not in repr(dumped) and "mk" not in repr(dumped["auth"])
