"""Environment overrides with a config file: <PREFIX>_ENABLED, _BASE_URL, _API_KEY, CORRAL_*."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from corral.config.errors import ConfigError
from corral.config.loader import load_config

CONFIG = """
providers:
  openai: {}
  mistral:
    api_key: ${MISTRAL_API_KEY}
  fast: {type: groq}
  local: {type: openai, base_url: "http://gpu.internal:8000/v1"}
models:
  gpt: {provider: openai, model: gpt-4o-mini, fallbacks: [small]}
  small: {provider: mistral, model: mistral-small-latest}
  mixed:
    deployments:
      - {provider: mistral, model: mistral-small-latest}
      - {provider: fast, model: llama-3.1-8b-instant}
agents:
  helper: {model: small}
default_model: small
"""


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "corral.yaml"
    path.write_text(textwrap.dedent(CONFIG).lstrip())
    return path


def test_enabled_false_disables_a_provider_and_drops_its_only_models(config_path: Path) -> None:
    loaded = load_config(config_path, env={"MISTRAL_ENABLED": "false", "MISTRAL_API_KEY": "m-key"})
    config = loaded.config
    assert config.providers["mistral"].enabled is False
    assert "small" not in config.models
    assert [d.provider for d in config.models["mixed"].all_deployments()] == ["fast"]
    assert config.models["gpt"].fallbacks == []
    assert config.default_model is None
    assert loaded.notes == [
        "MISTRAL_ENABLED=false: provider 'mistral' disabled",
        "model 'small' dropped: provider mistral is disabled",
        "model 'mixed': 1 deployment(s) on disabled providers dropped",
        "agent 'helper' uses model 'small', which was dropped: its requests will fail",
        "default_model 'small' was dropped: no default model",
    ]


def test_enabled_applies_by_type_when_the_name_is_not_a_preset(config_path: Path) -> None:
    config = load_config(config_path, env={"GROQ_ENABLED": "0"}).config
    assert config.providers["fast"].enabled is False
    assert config.models["mixed"].all_deployments()[0].provider == "mistral"


def test_enabled_true_switches_a_provider_back_on(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("providers:\n  mistral: {enabled: false}\n")
    assert load_config(path, env={"MISTRAL_ENABLED": "yes"}).config.providers["mistral"].enabled is True


def test_bad_enabled_value_is_a_config_error(config_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(config_path, env={"MISTRAL_ENABLED": "nah"})
    assert str(info.value) == "environment MISTRAL_ENABLED: expected true or false, got 'nah'"


def test_base_url_fills_only_when_the_config_gives_none(config_path: Path) -> None:
    env = {"OPENAI_BASE_URL": "http://proxy.local/v1"}
    loaded = load_config(config_path, env=env)
    assert loaded.config.providers["openai"].base_url == "http://proxy.local/v1"
    assert loaded.config.providers["local"].base_url == "http://gpu.internal:8000/v1"
    assert "OPENAI_BASE_URL sets providers.openai.base_url" in loaded.notes


def test_api_key_fills_from_the_preset_variable_but_never_towards_a_host_the_config_chose(
    config_path: Path,
) -> None:
    loaded = load_config(config_path, env={"OPENAI_API_KEY": "sk-real", "GROQ_API_KEY": "gsk"})
    providers = loaded.config.providers
    assert providers["openai"].api_key is not None
    assert providers["openai"].api_key.get_secret_value() == "sk-real"
    fast_key = providers["fast"].api_key
    assert fast_key is not None and fast_key.get_secret_value() == "gsk"
    assert providers["local"].api_key is None  # type openai, but its own base_url: the key stays home


def test_api_key_written_in_the_config_wins(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("providers:\n  openai: {api_key: sk-from-file}\n")
    key = load_config(path, env={"OPENAI_API_KEY": "sk-env"}).config.providers["openai"].api_key
    assert key is not None and key.get_secret_value() == "sk-from-file"


def test_corral_variables_fill_master_key_database_and_cache(config_path: Path) -> None:
    env = {"CORRAL_MASTER_KEY": "mk-1", "CORRAL_DATABASE_URL": "postgresql://db/corral",
           "CORRAL_REDIS_URL": "redis://cache:6379/0"}
    config = load_config(config_path, env=env).config
    assert config.auth.master_key is not None and config.auth.master_key.get_secret_value() == "mk-1"
    assert config.database.url == "postgresql://db/corral"
    assert config.cache.url == "redis://cache:6379/0"


def test_master_key_in_the_config_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("auth:\n  master_key: from-file\n")
    key = load_config(path, env={"CORRAL_MASTER_KEY": "from-env"}).config.auth.master_key
    assert key is not None and key.get_secret_value() == "from-file"
