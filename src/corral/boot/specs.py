"""Effective service specs: the `services:` section, the services implied by the
database and cache URLs, and the `SVC_<NAME>_*` environment overrides on top.

The overrides are exactly the HelixAgent BootManager's: ``SVC_<NAME>_HOST``, ``_PORT``,
``_URL``, ``_REMOTE``, ``_ENABLED``, ``_REQUIRED``, ``_TIMEOUT``, ``_RETRY_COUNT``,
``_HEALTH_PATH``, ``_HEALTH_TYPE`` (plus ``_DEADLINE``). ``<NAME>`` is the service name in
upper case with every non-alphanumeric character turned into ``_``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, get_args
from urllib.parse import urlsplit, urlunsplit

from corral.config.schema import CorralConfig
from corral.config.services import DEFAULT_PORTS, HealthKind, ServiceConfig, find_cycle
from corral.telemetry.redact import redact_url


class ServiceSpecError(ValueError):
    """An override or a dependency that cannot be resolved; the message names it."""


# HelixAgent spells two of our default service names differently; its variables work too.
_HELIX_ALIASES = {"postgres": "POSTGRESQL", "chroma": "CHROMADB"}
_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
               "off": False}
_OVERRIDE_FIELDS = ("HOST", "PORT", "URL", "REMOTE", "ENABLED", "REQUIRED", "TIMEOUT", "RETRY_COUNT",
                    "HEALTH_PATH", "HEALTH_TYPE", "DEADLINE")


@dataclass(frozen=True)
class StartSpec:
    command: tuple[str, ...] = ()
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    compose_service: str | None = None
    compose_file: str | None = None
    compose_profile: str | None = None


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    type: str
    health_kind: str
    host: str | None = None
    port: int | None = None
    url: str | None = None
    enabled: bool = True
    required: bool = True
    remote: bool = False
    depends_on: tuple[str, ...] = ()
    health_path: str | None = None
    health_command: tuple[str, ...] = ()
    expect_status: tuple[int, ...] = ()
    timeout: float = 5.0
    retries: int = 8
    deadline: float = 60.0
    backoff: float = 0.25
    start: StartSpec | None = None
    source: str = "services"  # "services", "database.url" or "cache.url"
    overrides: tuple[str, ...] = ()  # the SVC_* variables that changed this spec

    @property
    def address(self) -> str:
        """Where the service is, fit to print: credentials removed."""
        if self.url:
            return redact_url(self.url)
        if self.host or self.port:
            return f"{self.host or '127.0.0.1'}:{self.port or DEFAULT_PORTS.get(self.type, '')}".rstrip(":")
        return " ".join(self.health_command)

    @property
    def has_credentials(self) -> bool:
        return bool(self.url and urlsplit(self.url).password is not None)


def env_prefix(name: str) -> str:
    return "SVC_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper() + "_"


def effective_services(config: CorralConfig, env: Mapping[str, str]) -> list[ServiceSpec]:
    """The services this config depends on, with environment overrides applied, in
    declaration order (implied database/cache services first)."""
    services = _declared_and_implied(config)
    specs = [_from_config(name, service, source) for name, (service, source) in services.items()]
    specs = [_apply_env(spec, env) for spec in specs]
    _check_dependencies(specs)
    return specs


def unknown_overrides(specs: list[ServiceSpec], env: Mapping[str, str]) -> list[str]:
    """`SVC_*` variables that match no service (typos, or a service not declared)."""
    prefixes = [env_prefix(s.name) for s in specs]
    prefixes += [f"SVC_{_HELIX_ALIASES[s.name]}_" for s in specs if s.name in _HELIX_ALIASES]
    return sorted(
        key for key in env
        if key.startswith("SVC_") and key.endswith(tuple("_" + f for f in _OVERRIDE_FIELDS))
        and not key.startswith(tuple(prefixes))
    )


def _declared_and_implied(config: CorralConfig) -> dict[str, tuple[ServiceConfig, str]]:
    """Declared services plus those implied by database.url / cache.url. A declared
    service at the same address as one of those URLs adopts the URL, so its probe logs
    in with the credentials Corral will really use."""
    declared = {name: (service, "services") for name, service in config.services.items()}
    implied: dict[str, tuple[ServiceConfig, str]] = {}
    urls = []
    if config.database.url and urlsplit(config.database.url).scheme.startswith("postgres"):
        urls.append(("postgres", _plain_pg_url(config.database.url), "database.url"))
    if config.cache.url and urlsplit(config.cache.url).scheme in ("redis", "rediss"):
        urls.append(("redis", config.cache.url, "cache.url"))
    urls += _knowledge_urls(config)
    for kind, url, source in urls:
        if not _adopt(declared, kind, url, source) and kind not in declared and kind not in implied:
            implied[kind] = (ServiceConfig(type=kind, url=url), source)
    return {**implied, **declared}


def _knowledge_urls(config: CorralConfig) -> list[tuple[str, str, str]]:
    """The vector stores the knowledge bases use (only those with a URL: local ones need no service)."""
    urls: list[tuple[str, str, str]] = []
    for name, base in config.knowledge.items():
        store = base.store
        if base.embedder is None or not store.url or store.type == "embedded":
            continue
        kind = "postgres" if store.type == "pgvector" else store.type
        url = _plain_pg_url(store.url) if kind == "postgres" else store.url
        urls.append((kind, url, f"knowledge.{name}.store.url"))
    return urls


def _adopt(declared: dict[str, tuple[ServiceConfig, str]], kind: str, url: str, source: str) -> bool:
    for name, (service, _) in declared.items():
        if service.type == kind and _declared_at(service, kind, url):
            if service.url is None:
                declared[name] = (service.model_copy(update={"url": url, "host": None, "port": None}),
                                  f"services + {source}")
            return True
    return False


def _declared_at(service: ServiceConfig, kind: str, url: str) -> bool:
    target = urlsplit(url)
    if service.url:
        other = urlsplit(service.url)
        host, port = other.hostname, other.port or DEFAULT_PORTS[kind]
    else:
        host, port = service.host or "127.0.0.1", service.port or DEFAULT_PORTS[kind]
    return host == target.hostname and port == (target.port or DEFAULT_PORTS[kind])


def _plain_pg_url(url: str) -> str:
    """`postgresql+asyncpg://` (SQLAlchemy's spelling) as libpq/asyncpg spell it."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql"))


def _from_config(name: str, service: ServiceConfig, source: str) -> ServiceSpec:
    start = None
    if service.start:
        start = StartSpec(
            command=_argv(service.start.command),
            cwd=service.start.cwd,
            env=dict(service.start.env),
            compose_service=service.start.compose_service,
            compose_file=service.start.compose_file,
            compose_profile=service.start.compose_profile,
        )
    return ServiceSpec(
        name=name,
        type=service.type,
        health_kind=service.health.kind or service.type,
        host=service.host,
        port=service.port,
        url=service.url,
        enabled=service.enabled,
        required=service.required,
        remote=service.remote,
        depends_on=tuple(service.depends_on),
        health_path=service.health.path,
        health_command=_argv(service.health.command),
        expect_status=tuple(service.health.expect_status),
        timeout=service.health.timeout,
        retries=service.retries,
        deadline=service.deadline,
        backoff=service.backoff,
        start=start,
        source=source,
    )


def _argv(command: list[str] | str | None) -> tuple[str, ...]:
    if command is None:
        return ()
    return tuple(shlex.split(command)) if isinstance(command, str) else tuple(command)


def _lookup(env: Mapping[str, str], spec: ServiceSpec, key: str) -> tuple[str, str] | None:
    names = [env_prefix(spec.name) + key]
    if spec.name in _HELIX_ALIASES:
        names.append(f"SVC_{_HELIX_ALIASES[spec.name]}_{key}")
    for variable in names:
        value = env.get(variable)
        if value is not None and value.strip() != "":
            return variable, value.strip()
    return None


def _apply_env(spec: ServiceSpec, env: Mapping[str, str]) -> ServiceSpec:
    changes: dict[str, Any] = {}
    used: list[str] = []
    for key in _OVERRIDE_FIELDS:
        found = _lookup(env, spec, key)
        if found is None:
            continue
        variable, raw = found
        used.append(variable)
        changes.update(_parse_override(key, variable, raw))
    if not used:
        return spec
    url = changes.pop("url", spec.url)
    host = changes.pop("host", None)
    port = changes.pop("port", None)
    if url and (host or port):
        url = _rewrite_netloc(url, host, port)
    elif not url:
        changes["host"] = host or spec.host
        changes["port"] = port or spec.port
    if url and url != spec.url:
        changes.update(url=url, host=None, port=None)
    return replace(spec, **changes, overrides=tuple(used))


def _parse_override(key: str, variable: str, raw: str) -> dict[str, Any]:
    if key in ("REMOTE", "ENABLED", "REQUIRED"):
        if raw.lower() not in _BOOL_WORDS:
            raise ServiceSpecError(f"{variable}={raw!r}: expected true or false")
        return {key.lower(): _BOOL_WORDS[raw.lower()]}
    if key == "PORT":
        if not raw.isdigit() or not 1 <= int(raw) <= 65535:
            raise ServiceSpecError(f"{variable}={raw!r}: expected a port number 1-65535")
        return {"port": int(raw)}
    if key in ("TIMEOUT", "DEADLINE"):
        seconds = _seconds(variable, raw)
        return {"timeout" if key == "TIMEOUT" else "deadline": seconds}
    if key == "RETRY_COUNT":
        if not raw.isdigit():
            raise ServiceSpecError(f"{variable}={raw!r}: expected a whole number")
        return {"retries": int(raw)}
    if key == "HEALTH_TYPE":
        aliases = {"pgx": "postgres", "postgresql": "postgres", "chromadb": "chroma"}
        kind = aliases.get(raw.lower(), raw.lower())
        if kind not in get_args(HealthKind):
            raise ServiceSpecError(f"{variable}={raw!r}: expected one of {', '.join(get_args(HealthKind))}")
        return {"health_kind": kind}
    if key == "HEALTH_PATH":
        return {"health_path": raw}
    if key == "URL":
        return {"url": raw}
    return {"host": raw}


def _seconds(variable: str, raw: str) -> float:
    # HelixAgent writes Go durations ("5s", "500ms"); plain numbers are seconds.
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", raw)
    if not match or float(match.group(1)) <= 0:
        raise ServiceSpecError(f"{variable}={raw!r}: expected seconds, e.g. 5, 2.5, 500ms or 5s")
    value = float(match.group(1))
    return {"ms": value / 1000, "m": value * 60}.get(match.group(2) or "s", value)


def _rewrite_netloc(url: str, host: str | None, port: int | None) -> str:
    parts = urlsplit(url)
    new_host = host or parts.hostname or ""
    new_port = port or parts.port
    if ":" in new_host:
        new_host = f"[{new_host}]"
    userinfo = ""
    if parts.username is not None:
        userinfo = parts.username + (f":{parts.password}" if parts.password is not None else "") + "@"
    netloc = f"{userinfo}{new_host}" + (f":{new_port}" if new_port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _check_dependencies(specs: list[ServiceSpec]) -> None:
    names = {s.name for s in specs}
    for spec in specs:
        missing = [d for d in spec.depends_on if d not in names]
        if missing:
            raise ServiceSpecError(
                f"service {spec.name!r} depends on {missing[0]!r}, which is neither declared in services: "
                "nor implied by database.url / cache.url"
            )
    cycle = find_cycle({s.name: list(s.depends_on) for s in specs})
    if cycle:
        raise ServiceSpecError("dependency cycle: " + " -> ".join(cycle))


def topological_levels(specs: list[ServiceSpec]) -> list[list[ServiceSpec]]:
    """Services grouped by level: each level depends only on earlier ones."""
    _check_dependencies(specs)
    remaining = {s.name: s for s in specs}
    done: set[str] = set()
    levels: list[list[ServiceSpec]] = []
    while remaining:
        level = [s for s in remaining.values() if all(d in done for d in s.depends_on)]
        levels.append(level)
        for spec in level:
            done.add(spec.name)
            del remaining[spec.name]
    return levels
