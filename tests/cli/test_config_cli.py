"""`corral validate`, `corral schema` and `corral config show` through the real CLI app."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from ruamel.yaml import YAML
from typer.testing import CliRunner

from corral.cli.main import build_app
from corral.config.presets import PRESETS

SECRETS = ("sk-file-secret", "mk-master-secret", "Bearer tok-secret", "az-header-secret", "pg-secret")

CONFIG = """
providers:
  openai:
    api_key: sk-file-secret
    headers:
      Authorization: Bearer tok-secret
      api-key: az-header-secret
      X-Team: research
  mistral: {}
  scripted: {type: scripted}
models:
  chat: {provider: openai, model: gpt-4o-mini}
  small: {provider: mistral, model: mistral-small-latest}
  echo: {provider: scripted, model: echo}
database:
  url: postgresql://corral:pg-secret@db.internal:5432/corral
server:
  port: ${PORT:-9000}
auth:
  master_key: mk-master-secret
"""


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No provider variables from this machine leak in, and no local Ollama is probed."""
    monkeypatch.chdir(tmp_path)
    for preset in PRESETS.values():
        for suffix in ("_ENABLED", "_BASE_URL", "_API_KEY"):
            monkeypatch.delenv(preset.env_prefix + suffix, raising=False)
        if preset.key_env:
            monkeypatch.delenv(preset.key_env, raising=False)
    for name in ("CORRAL_CONFIG", "CORRAL_MASTER_KEY", "CORRAL_DATABASE_URL", "CORRAL_REDIS_URL", "PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OLLAMA_ENABLED", "false")
    return tmp_path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def write(directory: Path, text: str, name: str = "corral.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def test_validate_ok_exits_0_with_a_summary(clean_env: Path, runner: CliRunner) -> None:
    write(clean_env, CONFIG)
    result = runner.invoke(build_app(), ["validate", "corral.yaml"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "ok: corral.yaml: 3 providers, 3 models, 0 agents; default model: none"


def test_validate_reports_every_error_one_per_line_and_exits_1(clean_env: Path, runner: CliRunner) -> None:
    write(clean_env, """
        providers:
          openai: {api_key: sk-x}
        models:
          fast: {provider: opnai, model: gpt-4o-mini}
        server:
          prot: 80
        """)
    result = runner.invoke(build_app(), ["validate", "corral.yaml"])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "corral.yaml:4 models.fast.provider: unknown provider 'opnai' (did you mean 'openai'?)",
        "corral.yaml:6 server.prot: unknown key 'prot' (did you mean 'port'?)",
    ]
    assert "2 errors found" in result.stderr


def test_validate_json_lists_structured_errors(clean_env: Path, runner: CliRunner) -> None:
    write(clean_env, "models:\n  m: {provider: nope, model: x}\n")
    result = runner.invoke(build_app(), ["validate", "corral.yaml", "--format", "json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report == {
        "ok": False,
        "file": "corral.yaml",
        "errors": [{"file": "corral.yaml", "line": 2, "key": "models.m.provider", "path": ["models", "m", "provider"],
                    "message": "unknown provider 'nope': no providers are configured"}],
        "notes": [],
    }


def test_validate_json_ok_summary(clean_env: Path, runner: CliRunner) -> None:
    write(clean_env, CONFIG)
    result = runner.invoke(build_app(), ["validate", "corral.yaml", "-f", "json"], env={"MISTRAL_ENABLED": "false"})
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["errors"] == []
    assert report["providers"] == ["openai", "scripted"]
    assert report["disabled_providers"] == ["mistral"]
    assert report["models"] == ["chat", "echo"]
    assert "model 'small' dropped: provider mistral is disabled" in report["notes"]


def test_validate_missing_file_exits_1(clean_env: Path, runner: CliRunner) -> None:
    result = runner.invoke(build_app(), ["validate", "missing.yaml"])
    assert result.exit_code == 1
    assert result.stdout.strip() == "missing.yaml: file not found"


def test_validate_yaml_syntax_error_names_the_line(clean_env: Path, runner: CliRunner) -> None:
    write(clean_env, "server:\n  port: 80\n  host: [oops\n")
    result = runner.invoke(build_app(), ["validate", "corral.yaml"])
    assert result.exit_code == 1
    assert result.stdout.startswith("corral.yaml:4: invalid YAML: ")


def test_validate_without_a_file_checks_zero_config(clean_env: Path, runner: CliRunner) -> None:
    result = runner.invoke(build_app(), ["validate"], env={"OPENAI_API_KEY": "sk-x"})
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "ok: zero-config (no config file): 1 provider, 1 model, 0 agents; default model: openai/gpt-4o-mini"
    )


def test_schema_prints_the_json_schema_of_the_config(clean_env: Path, runner: CliRunner) -> None:
    result = runner.invoke(build_app(), ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert {"providers", "models", "agents", "server", "auth", "default_model"} <= set(schema["properties"])
    provider = schema["$defs"]["ProviderConfig"]
    assert provider["properties"]["passthrough"]["default"] is False
    assert result.stdout.startswith("{\n  ")  # pretty-printed


def _assert_no_secrets(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_config_show_yaml_masks_every_secret_and_applies_substitution(
    clean_env: Path, runner: CliRunner
) -> None:
    write(clean_env, CONFIG)
    result = runner.invoke(build_app(), ["config", "show"], env={"PORT": "9100", "MISTRAL_API_KEY": "m-env-secret"})
    assert result.exit_code == 0, result.output
    _assert_no_secrets(result.stdout)
    assert "m-env-secret" not in result.stdout
    shown = YAML(typ="safe").load(result.stdout)
    openai = shown["providers"]["openai"]
    assert openai["api_key"] == "***"
    assert openai["headers"] == {"Authorization": "***", "api-key": "***", "X-Team": "research"}
    assert shown["providers"]["mistral"]["api_key"] == "***"  # filled from MISTRAL_API_KEY, then masked
    assert shown["auth"]["master_key"] == "***"
    assert shown["database"]["url"] == "postgresql://corral:***@db.internal:5432/corral"
    assert shown["server"]["port"] == 9100
    assert result.stdout.startswith("# effective config from corral.yaml\n")


def test_config_show_json_reflects_env_overrides(clean_env: Path, runner: CliRunner) -> None:
    path = write(clean_env, CONFIG, name="other.yaml")
    env = {"MISTRAL_ENABLED": "false", "CORRAL_REDIS_URL": "redis://:redis-secret@cache:6379/0"}
    result = runner.invoke(build_app(), ["config", "show", "--config", str(path), "--format", "json"], env=env)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["providers"]["mistral"]["enabled"] is False
    assert "small" not in shown["models"]
    assert shown["cache"]["url"] == "redis://:***@cache:6379/0"
    assert "redis-secret" not in result.stdout
    assert "note: MISTRAL_ENABLED=false: provider 'mistral' disabled" in result.stderr


def test_config_show_zero_config_masks_keys_from_the_environment(clean_env: Path, runner: CliRunner) -> None:
    result = runner.invoke(build_app(), ["config", "show", "-f", "json"], env={"GROQ_API_KEY": "gsk-env-secret"})
    assert result.exit_code == 0, result.output
    assert "gsk-env-secret" not in result.stdout
    shown = json.loads(result.stdout)
    assert shown["providers"]["groq"] == {**shown["providers"]["groq"], "api_key": "***", "passthrough": True}
    assert shown["default_model"] == "groq/llama-3.1-8b-instant"


def test_config_show_with_errors_exits_1(clean_env: Path, runner: CliRunner) -> None:
    write(clean_env, "server:\n  port: ${PORT:?needed}\n")
    result = runner.invoke(build_app(), ["config", "show"])
    assert result.exit_code == 1
    assert "corral.yaml:2 server.port: PORT is not set: needed" in result.stderr
    assert result.stdout == ""
