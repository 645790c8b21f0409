"""load_config: substitution in files, .env, validation errors with file:line, references."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from corral.config.errors import ConfigError
from corral.config.loader import load_config


def write(tmp_path: Path, text: str, name: str = "corral.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def errors(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    return str(info.value).splitlines()


SCRIPTED = """
providers:
  scripted: {type: scripted}
models:
  scripted: {provider: scripted, model: echo}
"""


def test_minimal_scripted_config_loads_with_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, SCRIPTED)
    loaded = load_config(path, env={})
    assert loaded.path == path
    assert loaded.zero_config is False
    assert loaded.config.models["scripted"].provider == "scripted"
    assert loaded.config.providers["scripted"].type == "scripted"


def test_values_are_substituted_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, """
        providers:
          up:
            type: openai-compatible
            base_url: http://${UP_HOST}:${UP_PORT:-8000}/v1
            api_key: ${UP_KEY:-sk-local}
            headers: {X-Literal: "$${NOT_A_VAR}"}
        server:
          port: ${PORT:-9090}
        """)
    loaded = load_config(path, env={"UP_HOST": "gpu1"})
    provider = loaded.config.providers["up"]
    assert provider.base_url == "http://gpu1:8000/v1"
    assert provider.api_key is not None and provider.api_key.get_secret_value() == "sk-local"
    assert provider.headers == {"X-Literal": "${NOT_A_VAR}"}
    assert loaded.config.server.port == 9090  # a substituted string still becomes an int


def test_unset_whole_value_leaves_the_key_out_so_the_default_applies(tmp_path: Path) -> None:
    path = write(tmp_path, SCRIPTED + "server:\n  port: ${PORT}\n  host: ${HOST}\n")
    loaded = load_config(path, env={})
    assert loaded.config.server.port == 8080
    assert loaded.config.server.host == "127.0.0.1"
    assert "PORT is not set (" + str(path) + ":6 server.port)" in loaded.notes


def test_required_variable_error_names_file_line_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, SCRIPTED + "database:\n  url: ${DATABASE_URL:?point it at Postgres}\n")
    assert errors(path) == [f"{path}:6 database.url: DATABASE_URL is not set: point it at Postgres"]


def test_dotenv_next_to_the_config_is_loaded_but_never_overrides_the_environment(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("UP_HOST=from-dotenv\nUP_PORT=7000\nRAW=a$b${C}\n")
    path = write(tmp_path, """
        providers:
          up: {type: openai-compatible, base_url: "http://${UP_HOST}:${UP_PORT}", api_key: "${RAW}"}
        """)
    loaded = load_config(path, env={"UP_HOST": "from-env"})
    provider = loaded.config.providers["up"]
    assert provider.base_url == "http://from-env:7000"
    # .env values are taken literally: nothing inside them is expanded
    assert provider.api_key is not None and provider.api_key.get_secret_value() == "a$b${C}"
    assert loaded.env["UP_PORT"] == "7000"
    assert f"loaded 3 variables from {tmp_path / '.env'}" in loaded.notes


def test_every_problem_is_reported_at_once_each_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, """
        version: 1
        providers:
          openai:
            api_key: sk-x
          local:
            type: opnai
        models:
          fast:
            provider: opnai
            model: gpt-4o-mini
            fallbacks: [slw]
          slow:
            provider: openai
            model: gpt-4o
            strategy: weigted
        server:
          port: eighty
          hots: 0.0.0.0
        agents:
          helper:
            model: fats
            sub_agents: [helpr]
        default_model: nope
        """)
    p = str(path)
    assert errors(path) == [
        f"{p}:6 providers.local.type: unknown provider type 'opnai' (did you mean 'openai'?)",
        f"{p}:9 models.fast.provider: unknown provider 'opnai' (did you mean 'openai'?)",
        f"{p}:11 models.fast.fallbacks[0]: unknown model 'slw' (did you mean 'slow'?)",
        f"{p}:15 models.slow.strategy: input should be 'weighted', 'least-busy' or 'lowest-latency'; "
        "got 'weigted' (did you mean 'weighted'?)",
        f"{p}:17 server.port: input should be a valid integer, unable to parse string as an integer "
        "(got 'eighty')",
        f"{p}:18 server.hots: unknown key 'hots' (did you mean 'host'?)",
        f"{p}:21 agents.helper.model: unknown model or agent 'fats' (did you mean 'fast'?)",
        f"{p}:22 agents.helper.sub_agents[0]: unknown agent 'helpr' (did you mean 'helper'?)",
        f"{p}:23 default_model: unknown model or agent 'nope'",
    ]


def test_issues_carry_structured_fields(tmp_path: Path) -> None:
    path = write(tmp_path, SCRIPTED + "modles: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    (issue,) = info.value.issues
    assert issue.to_dict() == {
        "file": str(path), "line": 5, "key": "modles", "path": ["modles"],
        "message": "unknown key 'modles' (did you mean 'models'?)",
    }


def test_unknown_key_deep_in_a_list_names_its_index(tmp_path: Path) -> None:
    path = write(tmp_path, """
        providers:
          a: {type: scripted}
        models:
          m:
            deployments:
              - {provider: a, model: x}
              - provider: a
                modle: y
        """)
    assert errors(path) == [
        f"{path}:7 models.m.deployments[1].model: required key is missing",
        f"{path}:8 models.m.deployments[1].modle: unknown key 'modle' (did you mean 'model'?)",
    ]


def test_wrong_types_and_missing_values_are_reported(tmp_path: Path) -> None:
    path = write(tmp_path, """
        providers:
          s: {type: scripted, timeout: -1}
        models:
          m: {provider: s}
        verification:
          enabled: maybe
        """)
    assert errors(path) == [
        f"{path}:2 providers.s.timeout: input should be greater than 0 (got -1)",
        f"{path}:4 models.m: needs provider and model (or a deployments list)",
        f"{path}:6 verification.enabled: input should be a valid boolean, unable to interpret input "
        "(got 'maybe')",
    ]


def test_model_referencing_an_unconfigured_preset_says_none_are_configured(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  m: {provider: openai, model: gpt-4o}\n")
    assert errors(path) == [f"{path}:2 models.m.provider: unknown provider 'openai': no providers are configured"]


def test_provider_without_a_base_url_where_its_type_has_none_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  up: {type: openai-compatible}\n")
    assert errors(path) == [f"{path}:2 providers.up: base_url is required for type 'openai-compatible'"]


def test_secret_values_are_not_echoed_in_type_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  o:\n    api_key: [sk-very-secret]\n")
    (line,) = errors(path)
    assert line.startswith(f"{path}:3 providers.o.api_key: ")
    assert "sk-very-secret" not in line


def test_yaml_syntax_error_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  s: {type: scripted\nmodels: {}\n")
    (line,) = errors(path)
    assert line.startswith(f"{path}:3: invalid YAML: ")


def test_duplicate_key_is_reported_without_its_values(tmp_path: Path) -> None:
    path = write(tmp_path, "auth:\n  master_key: one-secret\n  master_key: two-secret\n")
    (line,) = errors(path)
    assert line == f"{path}:3: invalid YAML: duplicate key 'master_key' (the mapping starts at line 2)"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    assert errors(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: file not found"]


def test_empty_file_is_an_empty_valid_config(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, ""), env={})
    assert loaded.config.providers == {} and loaded.config.server.port == 8080


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert errors(write(tmp_path, "- a\n- b\n")) == [f"{tmp_path / 'corral.yaml'}:1: the top level must be a "
                                                      "mapping of sections"]


def test_yaml_anchors_and_merge_keys_work(tmp_path: Path) -> None:
    path = write(tmp_path, """
        providers:
          s: {type: scripted}
        models:
          base: &base {provider: s, model: echo, num_retries: 5}
          copy:
            <<: *base
            model: other
        """)
    models = load_config(path, env={}).config.models
    assert (models["copy"].provider, models["copy"].model, models["copy"].num_retries) == ("s", "other", 5)


def test_passthrough_provider_names_are_valid_model_references(tmp_path: Path) -> None:
    path = write(tmp_path, """
        providers:
          openai: {api_key: sk-x, passthrough: true}
        agents:
          helper: {model: openai/gpt-4.1}
        default_model: openai/gpt-4o
        """)
    loaded = load_config(path, env={})
    assert loaded.config.default_model == "openai/gpt-4o"
    assert loaded.passthrough_providers == frozenset({"openai"})


def test_model_argument_picks_the_default_model_or_fails_clearly(tmp_path: Path) -> None:
    path = write(tmp_path, SCRIPTED + "  other: {provider: scripted, model: echo}\n")
    assert load_config(path, env={}, model="other").config.default_model == "other"
    with pytest.raises(ConfigError, match=r"^--model: unknown model 'othr' \(did you mean 'other'\?\)$"):
        load_config(path, env={}, model="othr")


def test_no_path_prefers_corral_config_then_local_corral_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    elsewhere = write(tmp_path, SCRIPTED + "default_model: scripted\n", name="elsewhere.yaml")
    local = write(tmp_path, SCRIPTED)
    loaded = load_config(None, env={"CORRAL_CONFIG": str(elsewhere)})
    assert loaded.path == elsewhere and loaded.config.default_model == "scripted"  # explicit choice wins
    loaded = load_config(None, env={})
    assert loaded.path == Path("corral.yaml") and local.exists()
    assert loaded.config.default_model is None


def test_no_path_and_no_file_falls_back_to_zero_config_with_local_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("GROQ_API_KEY=gsk-test\n")
    loaded = load_config(None, env={}, probe_ollama=False)
    assert loaded.zero_config is True and loaded.path is None
    assert loaded.config.default_model == "groq/llama-3.1-8b-instant"
    assert loaded.notes[0] == "loaded 1 variables from .env"


def test_unset_variable_in_a_list_item_becomes_empty_and_keeps_positions(tmp_path: Path) -> None:
    path = write(tmp_path, SCRIPTED + "server:\n  cors_origins: [\"${ORIGIN_A}\", \"https://${HOST_B}\"]\n")
    loaded = load_config(path, env={"HOST_B": "b.example"})
    assert loaded.config.server.cors_origins == ["", "https://b.example"]
    assert f"ORIGIN_A is not set ({path}:6 server.cors_origins[0])" in loaded.notes


def test_bad_substitution_syntax_is_reported_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, SCRIPTED + "server:\n  host: \"${HOST:=x}\"\n")
    assert errors(path) == [
        f"{path}:6 server.host: bad substitution '${{HOST:=x}}': use ${{VAR}}, ${{VAR:-default}} or ${{VAR:?message}}"
    ]


def test_an_agent_instructions_file_is_relative_to_the_config_file(tmp_path: Path, monkeypatch) -> None:
    from corral.agents.registry import AgentRegistry

    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "triage.md").write_text("You triage tickets.", encoding="utf-8")
    path = tmp_path / "corral.yaml"
    path.write_text(textwrap.dedent("""\
        version: 1
        providers: {s: {type: scripted}}
        models: {m: {provider: s, model: scripted}}
        agents:
          triage:
            model: m
            instructions_file: prompts/triage.md
        """), encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # `corral serve` run from another directory
    loaded = load_config(path, env={})
    registry = AgentRegistry.from_config(loaded.config, toolsets={})
    assert registry.agents["triage"].instructions == "You triage tickets."

    path.write_text(path.read_text().replace("prompts/triage.md", "prompts/missing.md"), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    issue = caught.value.issues[0]
    assert issue.line == 7 and issue.path == ("agents", "triage", "instructions_file")
    assert "file not found" in issue.message and "missing.md" in issue.message
