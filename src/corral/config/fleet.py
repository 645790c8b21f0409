"""`supervisor.yaml` and `node.yaml`: the fleet's own config files (separate from corral.yaml).

Both accept ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}`` in values. Unknown keys
are errors. `load_fleet_config` reports every problem as ``file:line: key.path: message``.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from corral.config.alerts import AlertRoute
from corral.config.schema import PriceConfig, ProviderConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# ---- supervisor -------------------------------------------------------------------


class ServerSection(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8420, ge=0, le=65535)
    http_port: int = Field(default=8421, ge=0, le=65535)  # 0 disables the HTTP API
    max_frame_bytes: int = Field(default=1024 * 1024, ge=1024)
    heartbeat_interval_seconds: float = Field(default=30.0, gt=0)
    heartbeat_missed_count: int = Field(default=3, ge=1)


class AuthSection(_Strict):
    token: SecretStr | None = None  # CORRAL_FLEET_TOKEN or --token override it
    rotation_overlap_seconds: float = Field(default=300.0, ge=0)
    reload_interval_seconds: float = Field(default=30.0, gt=0)  # re-read this file for a new token


class TLSSection(_Strict):
    cert: Path
    key: Path


class RetryPolicy(_Strict):
    enabled: bool = False
    max_retries: int = Field(default=3, ge=1)
    retry_reset_seconds: float = Field(default=3600.0, gt=0)


class ResumeOnIdle(RetryPolicy):
    idle_threshold_seconds: float = Field(default=300.0, gt=0)
    message: str = "continue"


class RestartOnCompaction(RetryPolicy):
    max_retries: int = Field(default=2, ge=1)
    token_threshold: int = Field(default=180_000, ge=1)
    on_compaction_event: bool = True


class KillOnCost(RetryPolicy):
    max_retries: int = Field(default=1, ge=1)
    retry_reset_seconds: float = Field(default=86400.0, gt=0)
    cost_threshold_usd: float = Field(default=10.0, gt=0)


class PoliciesSection(_Strict):
    check_interval_seconds: float = Field(default=30.0, gt=0)
    command_timeout_seconds: float = Field(default=30.0, gt=0)
    resume_on_idle: ResumeOnIdle = Field(default_factory=ResumeOnIdle)
    restart_on_compaction: RestartOnCompaction = Field(default_factory=RestartOnCompaction)
    kill_on_cost: KillOnCost = Field(default_factory=KillOnCost)


class UsageProvider(_Strict):
    admin_api_key: SecretStr
    base_url: str | None = None


class CostSection(_Strict):
    pricing: dict[str, PriceConfig] = Field(default_factory=dict)  # same shape as corral.yaml `pricing:`
    poll_interval_minutes: float = Field(default=60.0, gt=0)
    request_timeout_seconds: float = Field(default=15.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    backoff_base_ms: int = Field(default=500, ge=0)
    providers: dict[Literal["anthropic", "openai"], UsageProvider] = Field(default_factory=dict)


class AuditSection(_Strict):
    enabled: bool = True
    retention_days: float = Field(default=90.0, gt=0)
    purge_interval_seconds: float = Field(default=3600.0, gt=0)


class SessionsSection(_Strict):
    """How long finished sessions stay in the supervisor's memory (they stay in the store)."""

    finished_retention_seconds: float = Field(default=3600.0, ge=0)
    max_finished_in_memory: int = Field(default=10_000, ge=0)  # the oldest finished go first beyond it


class SupervisorConfig(_Strict):
    version: Literal[1] = 1
    server: ServerSection = Field(default_factory=ServerSection)
    auth: AuthSection = Field(default_factory=AuthSection)
    tls: TLSSection | None = None
    origin_allowlist: list[str] = Field(default_factory=list)
    database_url: str | None = None  # default: sqlite fleet.db in the data dir
    command_timeout_seconds: float = Field(default=30.0, gt=0)
    idempotency_ttl_seconds: float = Field(default=86400.0, gt=0)
    event_batch_size: int = Field(default=500, ge=1)
    event_flush_ms: int = Field(default=20, ge=1)
    policies: PoliciesSection = Field(default_factory=PoliciesSection)
    cost: CostSection = Field(default_factory=CostSection)
    alerts: list[AlertRoute] = Field(default_factory=list)
    audit: AuditSection = Field(default_factory=AuditSection)
    sessions: SessionsSection = Field(default_factory=SessionsSection)

    @field_validator("database_url")
    @classmethod
    def _empty_is_default(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _ports_differ(self) -> SupervisorConfig:
        s = self.server
        if s.port and s.http_port and s.port == s.http_port:
            raise ValueError("server.port and server.http_port must differ")
        return self


# ---- node -----------------------------------------------------------------------


class NativeBackend(_Strict):
    """A Corral agent: ``url`` of a `corral serve` (OpenAI-compatible), or in-process ``provider``."""

    type: Literal["native"] = "native"
    model: str
    url: str | None = None
    api_key: SecretStr | None = None
    provider: ProviderConfig | None = None
    system_prompt: str | None = None
    timeout_seconds: float = Field(default=120.0, gt=0)

    @model_validator(mode="after")
    def _one_target(self) -> NativeBackend:
        if (self.url is None) == (self.provider is None):
            raise ValueError("a native backend needs exactly one of `url` or `provider`")
        return self


class OpenCodeBackend(_Strict):
    """`opencode serve`, one process per project directory, started by the node."""

    type: Literal["opencode"] = "opencode"
    command: list[str] = Field(default_factory=lambda: ["opencode"])
    model: str | None = None  # "provider/model" as opencode spells it
    env: dict[str, str] = Field(default_factory=dict)
    config: dict[str, Any] | None = None  # written as OPENCODE_CONFIG_CONTENT
    startup_timeout_seconds: float = Field(default=60.0, gt=0)
    max_restarts: int = Field(default=5, ge=0)


class ProjectSection(_Strict):
    name: str
    directory: Path
    backend: str


class NodeConfig(_Strict):
    version: Literal[1] = 1
    node_id: str = Field(default_factory=socket.gethostname)
    supervisor_url: str = "ws://127.0.0.1:8420"
    token: SecretStr | None = None
    ca_file: Path | None = None  # trust this CA for wss:// (self-signed supervisors)
    state_dir: Path | None = None  # outbox lives here; default: the data dir
    heartbeat_interval_seconds: float = Field(default=30.0, gt=0)
    max_frame_bytes: int = Field(default=1024 * 1024, ge=1024)
    backoff_min_seconds: float = Field(default=0.1, gt=0)
    backoff_max_seconds: float = Field(default=60.0, gt=0)
    backends: dict[str, NativeBackend | OpenCodeBackend] = Field(default_factory=dict)
    projects: list[ProjectSection] = Field(default_factory=list)

    @field_validator("node_id")
    @classmethod
    def _empty_is_hostname(cls, value: str) -> str:
        return value.strip() or socket.gethostname()

    @model_validator(mode="after")
    def _projects_use_known_backends(self) -> NodeConfig:
        for project in self.projects:
            if project.backend not in self.backends:
                raise ValueError(f"project {project.name!r} uses unknown backend {project.backend!r}")
        if len({p.name for p in self.projects}) != len(self.projects):
            raise ValueError("project names must be unique")
        return self


# ---- loading ---------------------------------------------------------------------

ConfigT = TypeVar("ConfigT", bound=BaseModel)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([-?])([^}]*))?\}")


class FleetConfigError(Exception):
    def __init__(self, issues: list[str]) -> None:
        super().__init__("\n".join(issues))
        self.issues = issues


def _expand(value: str, env: Mapping[str, str], where: str, issues: list[str]) -> str:
    def sub(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        current = env.get(name)
        if current:
            return current
        if op == "-":
            return arg
        if op == "?":
            issues.append(f"{where}: {arg or f'{name} is required'}")
            return ""
        return current or ""

    return _VAR.sub(sub, value)


def _walk(node: Any, env: Mapping[str, str], where: str, issues: list[str], lines: dict[str, int]) -> Any:
    line = getattr(getattr(node, "lc", None), "line", None)
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            with contextlib.suppress(AttributeError, KeyError, TypeError):
                lines[path] = node.lc.key(key)[0] + 1  # type: ignore[attr-defined]
            out[str(key)] = _walk(value, env, path, issues, lines)
        return out
    if isinstance(node, list):
        return [_walk(item, env, f"{where}.{i}", issues, lines) for i, item in enumerate(node)]
    if isinstance(node, str):
        del line
        return _expand(node, env, where, issues)
    return node


def load_fleet_config(
    path: str | Path | None, model: type[ConfigT], *, env: Mapping[str, str] | None = None
) -> ConfigT:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    env = os.environ if env is None else env
    if path is None:
        return model()
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise FleetConfigError([f"{file}: cannot read: {exc.strerror}"]) from None
    try:
        raw = YAML(typ="rt").load(text) or {}
    except YAMLError as exc:
        raise FleetConfigError([f"{file}: invalid YAML: {exc}"]) from None
    if not isinstance(raw, dict):
        raise FleetConfigError([f"{file}:1: the top level must be a mapping"])
    issues: list[str] = []
    lines: dict[str, int] = {}
    data = _walk(raw, env, "", issues, lines)
    if issues:
        raise FleetConfigError([f"{file}: {issue}" for issue in issues])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise FleetConfigError([_format(file, err, lines) for err in exc.errors()]) from None


def _format(file: Path, err: Any, lines: dict[str, int]) -> str:
    loc = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
    key = ".".join(loc)
    line = None
    for depth in range(len(loc), 0, -1):
        line = lines.get(".".join(loc[:depth]))
        if line is not None:
            break
    where = f"{file}:{line}" if line else str(file)
    return f"{where}: {key or '(top)'}: {err['msg']}"
