"""``<VAR>_FILE``: secrets read from files as Docker and Kubernetes mount them."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.config.environment import env_secret
from corral.config.errors import ConfigError
from corral.config.loader import load_config

CONFIG = """\
providers:
  mistral:
    api_key: ${MISTRAL_API_KEY}
  openai: {}
models:
  small: {provider: mistral, model: mistral-small-latest}
  gpt: {provider: openai, model: gpt-4o-mini}
default_model: small
"""


def _secret(tmp_path: Path, name: str, content: str) -> str:
    path = tmp_path / "secrets" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(content)
    return str(path)


def test_file_variants_fill_substitutions_and_overrides(tmp_path: Path) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text(CONFIG)
    env = {
        "MISTRAL_API_KEY_FILE": _secret(tmp_path, "mistral", "sk-mistral\n"),
        "OPENAI_API_KEY_FILE": _secret(tmp_path, "openai", "sk-openai\r\n"),
        "CORRAL_MASTER_KEY_FILE": _secret(tmp_path, "master", "mk-0123456789abcdef"),
        "CORRAL_DATABASE_URL_FILE": _secret(tmp_path, "db", "postgresql://corral:pw@db:5432/corral\n"),
    }
    loaded = load_config(config, env=env)
    c = loaded.config
    assert c.providers["mistral"].api_key is not None
    assert c.providers["mistral"].api_key.get_secret_value() == "sk-mistral"
    assert c.providers["openai"].api_key is not None
    assert c.providers["openai"].api_key.get_secret_value() == "sk-openai"
    assert c.auth.master_key is not None and c.auth.master_key.get_secret_value() == "mk-0123456789abcdef"
    assert c.database.url == "postgresql://corral:pw@db:5432/corral"
    assert "CORRAL_MASTER_KEY_FILE sets CORRAL_MASTER_KEY" in loaded.notes


def test_zero_config_reads_provider_keys_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"OPENAI_API_KEY_FILE": _secret(tmp_path, "openai", "sk-zero\n")}
    loaded = load_config(None, env=env, probe_ollama=False)
    assert loaded.zero_config
    openai = loaded.config.providers["openai"]
    assert openai.api_key is not None and openai.api_key.get_secret_value() == "sk-zero"


def test_both_set_is_an_error_naming_both_and_never_the_secret(tmp_path: Path) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text(CONFIG)
    env = {"MISTRAL_API_KEY": "sk-inline", "MISTRAL_API_KEY_FILE": _secret(tmp_path, "m", "sk-from-file")}
    with pytest.raises(ConfigError) as caught:
        load_config(config, env=env)
    message = str(caught.value)
    assert "both MISTRAL_API_KEY and MISTRAL_API_KEY_FILE are set" in message
    assert "sk-inline" not in message and "sk-from-file" not in message


def test_an_unreadable_file_names_the_variable_and_path(tmp_path: Path) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text(CONFIG)
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=rf"CORRAL_MASTER_KEY_FILE.*cannot read {missing}: No such file"):
        load_config(config, env={"MISTRAL_API_KEY": "k", "CORRAL_MASTER_KEY_FILE": str(missing)})


def test_unrelated_file_variables_are_left_alone(tmp_path: Path) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text(CONFIG)
    loaded = load_config(config, env={"MISTRAL_API_KEY": "k", "SSL_CERT": "x", "SSL_CERT_FILE": "/nonexistent"})
    assert loaded.env["SSL_CERT"] == "x"


def test_env_secret_for_a_single_variable(tmp_path: Path) -> None:
    path = _secret(tmp_path, "token", "fleet-token\n")
    assert env_secret("CORRAL_FLEET_TOKEN", {"CORRAL_FLEET_TOKEN_FILE": path}) == "fleet-token"
    assert env_secret("CORRAL_FLEET_TOKEN", {"CORRAL_FLEET_TOKEN": "inline"}) == "inline"
    assert env_secret("CORRAL_FLEET_TOKEN", {}) is None
    with pytest.raises(ValueError, match="both CORRAL_FLEET_TOKEN and CORRAL_FLEET_TOKEN_FILE"):
        env_secret("CORRAL_FLEET_TOKEN", {"CORRAL_FLEET_TOKEN": "a", "CORRAL_FLEET_TOKEN_FILE": path})
