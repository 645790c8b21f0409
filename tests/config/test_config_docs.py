"""The configuration docs and examples stay true: their YAML loads, their key tables name
real schema keys, and the presets table matches the presets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from corral.config.loader import load_config, model_keys, schema_walk
from corral.config.presets import PRESETS

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "configuration.md").read_text()


def _yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOC, flags=re.DOTALL)


def _env_for(text: str) -> dict[str, str]:
    """A value for every variable the text requires (``${X}``, ``${X:?...}``)."""
    required = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:\}|:?\?)", text)
    return {name: "postgresql://u@h/db" if "URL" in name else "value" for name in required}


@pytest.mark.parametrize("block", _yaml_blocks(), ids=lambda b: b.splitlines()[0])
def test_every_yaml_example_in_the_docs_loads(block: str, tmp_path: Path) -> None:
    path = tmp_path / "corral.yaml"
    path.write_text(block)
    loaded = load_config(path, env=_env_for(block))
    assert loaded.config.version == 1


def _key_tables() -> list[tuple[str, list[str]]]:
    tables = []
    for match in re.finditer(r"<!-- keys: (\S+) -->\n((?:\|.*\n)+)", DOC):
        keys = re.findall(r"^\| `([a-z_]+)` \|", match.group(2), flags=re.MULTILINE)
        tables.append((match.group(1), keys))
    return tables


@pytest.mark.parametrize(("section", "keys"), _key_tables(), ids=lambda v: v if isinstance(v, str) else "")
def test_documented_keys_exist_in_the_schema(section: str, keys: list[str]) -> None:
    _, annotation = schema_walk(tuple("any-name" if part == "*" else part for part in section.split(".")))
    fields = model_keys(annotation)
    assert fields is not None, section
    assert keys and set(keys) <= set(fields), set(keys) - set(fields)


def test_documented_sections_cover_every_top_level_key() -> None:
    documented = set(re.findall(r"^### `([a-z_]+)`", DOC, flags=re.MULTILINE))
    documented |= {"tools", "runs"}  # documented together under one heading
    fields = model_keys(schema_walk(())[1]) or []
    assert {"version", "providers", "models", "agents", "server", "database", "cache", "auth",
            "observability", "pricing", "verification", "default_model"} <= documented & set(fields)


def test_presets_table_matches_the_presets() -> None:
    table = DOC.split("<!-- presets -->\n", 1)[1].split("\n\n", 1)[0]
    rows = [[c.strip().strip("`") for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    assert [r[0] for r in rows] == list(PRESETS)
    for name, wire, base_url, key, default in rows:
        preset = PRESETS[name]
        assert (wire, base_url, key, default) == (
            preset.wire, preset.base_url or "—", preset.key_env or "—", preset.default_model or "—")


def test_quickstart_example_loads_offline_with_two_aliases() -> None:
    loaded = load_config(ROOT / "examples" / "quickstart.yaml", env={})
    config = loaded.config
    assert set(config.models) == {"scripted", "greeter"}
    assert all(config.providers[m.provider or ""].type == "scripted" for m in config.models.values())
    assert config.default_model == "scripted" and config.server.port == 8080


def test_openai_compatible_example_takes_its_upstream_from_the_environment() -> None:
    path = ROOT / "examples" / "openai-compatible.yaml"
    config = load_config(path, env={"OPENAI_BASE_URL": "http://127.0.0.1:8000/v1"}).config
    upstream = config.providers["upstream"]
    assert upstream.base_url == "http://127.0.0.1:8000/v1"
    assert upstream.api_key is not None and upstream.api_key.get_secret_value() == "sk-local"
    assert config.models["default"].model == "gpt-4o-mini"
    key = load_config(path, env={"OPENAI_BASE_URL": "http://h/v1", "OPENAI_API_KEY": "sk-real"}).config
    assert key.providers["upstream"].api_key is not None
    assert key.providers["upstream"].api_key.get_secret_value() == "sk-real"


def test_openai_compatible_example_without_a_base_url_says_what_to_set() -> None:
    from corral.config.errors import ConfigError

    with pytest.raises(ConfigError, match=r"OPENAI_BASE_URL is not set: set OPENAI_BASE_URL to the upstream's"):
        load_config(ROOT / "examples" / "openai-compatible.yaml", env={})
