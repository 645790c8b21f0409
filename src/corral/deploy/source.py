"""What the generators read: the validated config plus what only the raw file shows.

The loaded config has every ``${VAR}`` already replaced by its value, so generators
take env *names* (never values) from the file's text. Loading substitutes a harmless
placeholder for required variables that are unset here, because manifests are often
generated on a machine that does not hold the production secrets.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from corral.config.schema import CorralConfig

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}; not $${literal}
_REFERENCE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?])?")
PLACEHOLDER = "corral-generate-placeholder"
TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True, slots=True)
class EnvReference:
    name: str
    has_default: bool  # ${NAME:-x}: the config works without it


@dataclass(slots=True)
class DeploySource:
    config: CorralConfig
    text: str  # the config file as written (comments and ${VAR}s kept)
    path: Path | None = None
    references: list[EnvReference] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.config.server.port

    @property
    def env_names(self) -> list[str]:
        return [ref.name for ref in self.references]

    def required_env(self) -> list[str]:
        return [ref.name for ref in self.references if not ref.has_default]


def env_references(text: str) -> list[EnvReference]:
    """Every variable the text names, in order of first use."""
    seen: dict[str, bool] = {}
    for match in _REFERENCE.finditer(text):
        name, op = match.group(1), match.group(2) or ""
        has_default = op.endswith("-")
        seen[name] = seen.get(name, True) and has_default
    return [EnvReference(name, has_default) for name, has_default in seen.items()]


def generation_env(references: list[EnvReference], env: Mapping[str, str]) -> dict[str, str]:
    """The environment to load with: the real one, plus placeholders for required unset names."""
    merged = dict(env)
    for ref in references:
        if not ref.has_default and not merged.get(ref.name):
            merged[ref.name] = PLACEHOLDER
    return merged


def load_source(path: str | Path | None, *, env: Mapping[str, str] | None = None) -> DeploySource:
    """Load ``path`` for generating; with no path, the packaged template (`template_path`)."""
    from corral.config.loader import load_config

    file = Path(path) if path is not None else template_path("serve")
    text = file.read_text()
    references = env_references(text)
    base = os.environ if env is None else env
    loaded = load_config(file, env=generation_env(references, base))
    return DeploySource(config=loaded.config, text=text, path=file if path is not None else None,
                        references=references)


def template_path(role: str) -> Path:
    """The starting config for a role (serve, supervisor, node), shipped with the package."""
    return TEMPLATES / {"serve": "corral.yaml", "supervisor": "supervisor.yaml", "node": "node.yaml"}[role]


def reachable_host(host: str) -> str:
    """A host a client on the same machine can connect to (wildcard binds are not addresses)."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def server_url(config: CorralConfig) -> str:
    scheme = "https" if config.server.tls else "http"
    return f"{scheme}://{reachable_host(config.server.host)}:{config.server.port}"


def upstream_ports(config: CorralConfig) -> list[int]:
    """TCP ports the configured providers are reached on (for egress rules)."""
    ports = {443}
    for provider in config.providers.values():
        if provider.base_url:
            parts = urlsplit(provider.base_url)
            ports.add(parts.port or (443 if parts.scheme == "https" else 80))
    return sorted(ports)


def container_text(source: DeploySource, *, database_env: str | None, cache_env: str | None) -> str:
    """The config text a container should mount.

    ``CORRAL_DATABASE_URL``/``CORRAL_REDIS_URL`` only fill keys the file leaves empty, so a
    file that names a local SQLite file or Redis would ignore the deployment's services.
    Such keys are pointed at the variables instead; comments and layout are kept.
    """
    import io

    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    document = yaml.load(source.text)
    changed = False
    for section, variable in (("database", database_env), ("cache", cache_env)):
        block = document.get(section) if isinstance(document, dict) else None
        current = block.get("url") if isinstance(block, dict) else None
        if block is not None and variable and current and f"${{{variable}" not in str(current):
            block["url"] = f"${{{variable}}}"
            changed = True
    if not changed:
        return source.text
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    return buffer.getvalue()
