"""What the environment contributes to a config: ``.env`` files and overrides.

Overrides work the same with a config file and in zero-config mode:

- ``<PREFIX>_ENABLED=false|true`` switches a provider off (or back on)
- ``<PREFIX>_BASE_URL`` sets ``base_url`` when the config gives none (as the official SDKs do)
- the preset's key variable (``<PREFIX>_API_KEY``) fills ``api_key`` when the config gives none
- ``CORRAL_MASTER_KEY`` fills ``auth.master_key``; ``CORRAL_DATABASE_URL`` and
  ``CORRAL_REDIS_URL`` fill ``database.url`` and ``cache.url``; ``CORRAL_METRICS_TOKEN``
  fills ``observability.metrics_token`` (the scrape token of ``/metrics``)

``<PREFIX>`` comes from the provider's name when that names a preset (a provider named
``mistral`` answers to ``MISTRAL_*``), else from its ``type``.

Secrets may come from files, as Docker and Kubernetes mount them: for every variable
Corral reads (those above and each ``${VAR}`` the config names), ``<VAR>_FILE`` names a
file whose content (less its trailing newline) is the value when ``<VAR>`` is unset.
Setting both is an error naming both: silently preferring one would hide a stale secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from corral.config.errors import ConfigIssue
from corral.config.presets import PRESETS, Preset

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

CORRAL_OVERRIDES = (
    ("CORRAL_MASTER_KEY", ("auth", "master_key")),
    ("CORRAL_DATABASE_URL", ("database", "url")),
    ("CORRAL_REDIS_URL", ("cache", "url")),
    ("CORRAL_METRICS_TOKEN", ("observability", "metrics_token")),
)


FILE_SUFFIX = "_FILE"
_REFERENCE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")


def read_names(text: str = "") -> set[str]:
    """The variables Corral reads for a config of ``text`` (empty: zero-config)."""
    names = {variable for variable, _ in CORRAL_OVERRIDES}
    for preset in PRESETS.values():
        names.update((key_env(preset), f"{preset.env_prefix}_BASE_URL"))
    names.update(_REFERENCE.findall(text))
    return names


def read_secret_file(name: str, path: str) -> str:
    """The value ``<name>_FILE`` points at; `OSError` (naming the path, never the content)."""
    try:
        content = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise OSError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise OSError(f"cannot read {path}: {exc.strerror or exc}") from None
    return content.rstrip("\r\n")


def with_secret_files(
    env: Mapping[str, str], names: Iterable[str]
) -> tuple[dict[str, str], list[str], list[ConfigIssue]]:
    """``env`` with each ``<NAME>_FILE`` of ``names`` read into ``<NAME>``."""
    resolved = dict(env)
    notes: list[str] = []
    issues: list[ConfigIssue] = []
    for name in sorted(set(names)):
        file_var = name + FILE_SUFFIX
        path = env.get(file_var)
        if not path:
            continue
        if env.get(name):
            issues.append(ConfigIssue("environment", None, (name,),
                                      f"both {name} and {file_var} are set: set only one"))
            continue
        try:
            resolved[name] = read_secret_file(name, path)
        except OSError as exc:
            issues.append(ConfigIssue("environment", None, (file_var,), str(exc)))
            continue
        notes.append(f"{file_var} sets {name}")
    return resolved, notes, issues


def env_secret(name: str, env: Mapping[str, str]) -> str | None:
    """One variable read outside a config (a CLI's token): ``name``, else ``name_FILE``;
    `ValueError` if both are set or the file cannot be read."""
    resolved, _, issues = with_secret_files(env, [name])
    if issues:
        raise ValueError(issues[0].message)
    return resolved.get(name)


def read_dotenv(path: Path) -> dict[str, str]:
    """Variables of a ``.env`` file, taken literally (no ``$`` expansion inside it)."""
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path, interpolate=False).items() if v is not None}


def merged_env(real: Mapping[str, str], dotenv: Mapping[str, str]) -> dict[str, str]:
    """``.env`` values under the real environment: a variable already set wins."""
    return {**dotenv, **real}


def parse_flag(value: str) -> bool | None:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None


def provider_preset(name: str, type_: object) -> Preset | None:
    """The preset whose environment variables configure this provider."""
    if name in PRESETS:
        return PRESETS[name]
    return PRESETS.get(type_) if isinstance(type_, str) else None


def key_env(preset: Preset) -> str:
    return preset.key_env or f"{preset.env_prefix}_API_KEY"


def enabled_override(preset: Preset, env: Mapping[str, str]) -> tuple[bool | None, ConfigIssue | None]:
    variable = f"{preset.env_prefix}_ENABLED"
    raw = env.get(variable)
    if raw is None or raw.strip() == "":
        return None, None
    flag = parse_flag(raw)
    if flag is None:
        return None, ConfigIssue("environment", None, (variable,), f"expected true or false, got {raw!r}")
    return flag, None


def apply_provider_overrides(
    name: str, raw: dict[str, Any], env: Mapping[str, str], notes: list[str], issues: list[ConfigIssue]
) -> None:
    """Apply ``<PREFIX>_*`` variables to one raw provider mapping, in place."""
    preset = provider_preset(name, raw.get("type", "openai"))
    if preset is None:
        return
    prefix = preset.env_prefix
    flag, issue = enabled_override(preset, env)
    if issue:
        issues.append(issue)
    if flag is not None and flag != raw.get("enabled", True):
        raw["enabled"] = flag
        notes.append(f"{prefix}_ENABLED={env[f'{prefix}_ENABLED']}: provider {name!r} "
                     f"{'enabled' if flag else 'disabled'}")
    configured_url = raw.get("base_url")
    base_url = env.get(f"{prefix}_BASE_URL")
    if not configured_url and base_url:
        raw["base_url"] = base_url
        notes.append(f"{prefix}_BASE_URL sets providers.{name}.base_url")
    # A key for the preset's own service is never sent to a host the config chose, unless
    # the provider is named after the preset (then the user asked for exactly that key).
    key_var = key_env(preset)
    key = env.get(key_var)
    trusted_host = name in PRESETS or not configured_url
    if not raw.get("api_key") and key and trusted_host:
        raw["api_key"] = key
        notes.append(f"{key_var} fills providers.{name}.api_key")


def apply_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> tuple[list[str], list[ConfigIssue]]:
    """Apply every environment override to a raw (parsed, substituted) config, in place."""
    notes: list[str] = []
    issues: list[ConfigIssue] = []
    providers = raw.get("providers")
    if isinstance(providers, dict):
        for name, provider in providers.items():
            if isinstance(provider, dict):
                apply_provider_overrides(str(name), provider, env, notes, issues)
    for variable, (section, key) in CORRAL_OVERRIDES:
        value = env.get(variable)
        if not value:
            continue
        if raw.get(section) is None:
            raw[section] = {}
        block = raw[section]
        if isinstance(block, dict) and not block.get(key):
            block[key] = value
            notes.append(f"{variable} fills {section}.{key}")
    return notes, issues
