"""`supervisor.yaml` and `node.yaml`: the fleet's own config files (separate from corral.yaml).

They load through the same loader as `corral.yaml` (`corral.config.loader`): the same
``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}`` grammar, a ``.env`` beside the file,
``<VAR>_FILE`` for secrets mounted as files,
unknown keys as errors with a did-you-mean, and every problem reported at once as a
`ConfigError` whose issues name ``file:line key.path``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from corral.config.alerts import AlertRouteConfig
from corral.config.environment import merged_env, read_dotenv, read_names, with_secret_files
from corral.config.errors import ConfigError, ConfigIssue
from corral.config.loader import parse_source, validate_model
from corral.config.schema import PriceConfig, ProviderConfig, Strict

# ---- supervisor -------------------------------------------------------------------


class SupervisorServerConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8420, ge=0, le=65535)
    http_port: int = Field(default=8421, ge=0, le=65535)  # 0 disables the HTTP API
    max_frame_bytes: int = Field(default=1024 * 1024, ge=1024)
    heartbeat_interval_seconds: float = Field(default=30.0, gt=0)
    heartbeat_missed_count: int = Field(default=3, ge=1)


class FleetAuthConfig(Strict):
    token: SecretStr | None = None  # CORRAL_FLEET_TOKEN or --token override it
    rotation_overlap_seconds: float = Field(default=300.0, ge=0)
    reload_interval_seconds: float = Field(default=30.0, gt=0)  # re-read this file for a new token


class FleetTLSConfig(Strict):
    cert: Path
    key: Path


class RetryPolicyConfig(Strict):
    enabled: bool = False
    max_retries: int = Field(default=3, ge=1)
    retry_reset_seconds: float = Field(default=3600.0, gt=0)


class ResumeOnIdleConfig(RetryPolicyConfig):
    idle_threshold_seconds: float = Field(default=300.0, gt=0)
    message: str = "continue"


class RestartOnCompactionConfig(RetryPolicyConfig):
    max_retries: int = Field(default=2, ge=1)
    token_threshold: int = Field(default=180_000, ge=1)
    on_compaction_event: bool = True


class KillOnCostConfig(RetryPolicyConfig):
    max_retries: int = Field(default=1, ge=1)
    retry_reset_seconds: float = Field(default=86400.0, gt=0)
    cost_threshold_usd: float = Field(default=10.0, gt=0)


class PoliciesConfig(Strict):
    check_interval_seconds: float = Field(default=30.0, gt=0)
    command_timeout_seconds: float = Field(default=30.0, gt=0)
    resume_on_idle: ResumeOnIdleConfig = Field(default_factory=ResumeOnIdleConfig)
    restart_on_compaction: RestartOnCompactionConfig = Field(default_factory=RestartOnCompactionConfig)
    kill_on_cost: KillOnCostConfig = Field(default_factory=KillOnCostConfig)


class UsageProviderConfig(Strict):
    admin_api_key: SecretStr
    base_url: str | None = None


class CostConfig(Strict):
    pricing: dict[str, PriceConfig] = Field(default_factory=dict)  # same shape as corral.yaml `pricing:`
    poll_interval_minutes: float = Field(default=60.0, gt=0)
    request_timeout_seconds: float = Field(default=15.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    backoff_base_ms: int = Field(default=500, ge=0)
    providers: dict[Literal["anthropic", "openai"], UsageProviderConfig] = Field(default_factory=dict)


class AuditConfig(Strict):
    enabled: bool = True
    retention_days: float = Field(default=90.0, gt=0)
    purge_interval_seconds: float = Field(default=3600.0, gt=0)  # also the schedule of event_retention_days


class SessionsConfig(Strict):
    """How long finished sessions stay in the supervisor's memory (they stay in the store)."""

    finished_retention_seconds: float = Field(default=3600.0, ge=0)
    max_finished_in_memory: int = Field(default=10_000, ge=0)  # the oldest finished go first beyond it


CHAT_COMMANDS = ("status", "nodes", "sessions", "prompt", "kill", "cost")
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["json", "console"]


class SlackChatConfig(Strict):
    signing_secret: SecretStr  # the app's Signing Secret (Basic Information), e.g. ${SLACK_SIGNING_SECRET}
    # interactivity answers are POSTed to the payload's response_url only under these prefixes
    response_url_prefixes: list[str] = Field(default_factory=lambda: ["https://hooks.slack.com/"])


class DiscordChatConfig(Strict):
    public_key: str  # the application's Public Key (General Information), 64 hex characters

    @field_validator("public_key")
    @classmethod
    def _hex_key(cls, value: str) -> str:
        value = value.strip()
        try:
            if len(bytes.fromhex(value)) == 32:
                return value
        except ValueError:
            pass
        raise ValueError("public_key must be the application's Ed25519 public key: 64 hex characters")


class ChatRoleConfig(Strict):
    """Who holds a role: Slack user ids (``U0123``), Discord user ids, or Discord guild role ids."""

    slack_users: list[str] = Field(default_factory=list)
    discord_users: list[str] = Field(default_factory=list)
    discord_roles: list[str] = Field(default_factory=list)


class ChatCommandsConfig(Strict):
    """The roles allowed to run each command (a user needs one of them)."""

    status: list[str] = Field(default_factory=lambda: ["viewer", "operator"])
    nodes: list[str] = Field(default_factory=lambda: ["viewer", "operator"])
    sessions: list[str] = Field(default_factory=lambda: ["viewer", "operator"])
    cost: list[str] = Field(default_factory=lambda: ["viewer", "operator"])
    prompt: list[str] = Field(default_factory=lambda: ["operator"])
    kill: list[str] = Field(default_factory=lambda: ["operator"])

    def roles_for(self, command: str) -> list[str]:
        roles: list[str] = getattr(self, command)
        return roles


class ChatOpsConfig(Strict):
    """Slack slash commands / interactivity and Discord interactions, served by the HTTP API."""

    slack: SlackChatConfig | None = None
    discord: DiscordChatConfig | None = None
    replay_window_seconds: float = Field(default=300.0, gt=0)  # requests signed longer ago are refused
    reply_within_seconds: float = Field(default=2.5, gt=0, le=30)  # Slack and Discord give up after 3 s
    roles: dict[str, ChatRoleConfig] = Field(default_factory=dict)
    commands: ChatCommandsConfig = Field(default_factory=ChatCommandsConfig)

    @model_validator(mode="after")
    def _known_roles(self) -> ChatOpsConfig:
        for command in sorted(self.commands.model_fields_set):
            unknown = [r for r in self.commands.roles_for(command) if r not in self.roles]
            if unknown:
                raise ValueError(f"commands.{command} names roles not defined under `roles`: {', '.join(unknown)}")
        return self


class SupervisorConfig(Strict):
    version: Literal[1] = 1
    server: SupervisorServerConfig = Field(default_factory=SupervisorServerConfig)
    auth: FleetAuthConfig = Field(default_factory=FleetAuthConfig)
    tls: FleetTLSConfig | None = None
    origin_allowlist: list[str] = Field(default_factory=list)
    database_url: str | None = None  # default: sqlite fleet.db in the data dir
    command_timeout_seconds: float = Field(default=30.0, gt=0)
    idempotency_ttl_seconds: float = Field(default=86400.0, gt=0)
    event_batch_size: int = Field(default=500, ge=1)
    event_flush_ms: int = Field(default=20, ge=1)
    event_retention_days: float = Field(default=90.0, ge=0)  # purged with the audit log; 0 keeps events forever
    policies: PoliciesConfig = Field(default_factory=PoliciesConfig)
    cost: CostConfig = Field(default_factory=CostConfig)
    alerts: list[AlertRouteConfig] = Field(default_factory=list)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    sessions: SessionsConfig = Field(default_factory=SessionsConfig)
    chatops: ChatOpsConfig = Field(default_factory=ChatOpsConfig)
    log_level: LogLevel | None = None  # default: $LOG_LEVEL, else info
    log_format: LogFormat | None = None  # default: $LOG_FORMAT, else console

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


class NativeBackendConfig(Strict):
    """A Corral agent: ``url`` of a `corral serve` (OpenAI-compatible), or in-process ``provider``."""

    type: Literal["native"] = "native"
    model: str
    url: str | None = None
    api_key: SecretStr | None = None
    provider: ProviderConfig | None = None
    system_prompt: str | None = None
    timeout_seconds: float = Field(default=120.0, gt=0)

    @model_validator(mode="after")
    def _one_target(self) -> NativeBackendConfig:
        if (self.url is None) == (self.provider is None):
            raise ValueError("a native backend needs exactly one of `url` or `provider`")
        return self


class OpenCodeBackendConfig(Strict):
    """`opencode serve`, one process per project directory, started by the node."""

    type: Literal["opencode"] = "opencode"
    command: list[str] = Field(default_factory=lambda: ["opencode"])
    model: str | None = None  # "provider/model" as opencode spells it
    env: dict[str, str] = Field(default_factory=dict)
    config: dict[str, Any] | None = None  # written as OPENCODE_CONFIG_CONTENT
    startup_timeout_seconds: float = Field(default=60.0, gt=0)
    max_restarts: int = Field(default=5, ge=0)


class ProjectConfig(Strict):
    name: str
    directory: Path
    backend: str


class NodeConfig(Strict):
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
    backends: dict[str, NativeBackendConfig | OpenCodeBackendConfig] = Field(default_factory=dict)
    projects: list[ProjectConfig] = Field(default_factory=list)
    log_level: LogLevel | None = None  # default: $LOG_LEVEL, else info
    log_format: LogFormat | None = None  # default: $LOG_FORMAT, else console

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


def load_fleet_config(
    path: str | Path | None, model: type[ConfigT], *, env: Mapping[str, str] | None = None
) -> ConfigT:
    """Load ``supervisor.yaml`` or ``node.yaml`` as ``model``; raises `ConfigError` listing every
    problem. With no path, the model's defaults."""
    if path is None:
        return model()
    file = Path(path)
    real_env = dict(os.environ if env is None else env)
    if not file.is_file():
        raise ConfigError([ConfigIssue(str(file), None, (), "file not found" if not file.exists() else "not a file")])
    dotenv_path = file.parent / ".env"
    merged = merged_env(real_env, read_dotenv(dotenv_path) if dotenv_path.is_file() else {})
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(str(file), None, (), f"cannot read: {exc}")]) from None
    merged, _notes, file_issues = with_secret_files(merged, read_names(text))
    if file_issues:
        raise ConfigError(file_issues)
    source = parse_source(text, str(file), merged)
    config, issues = validate_model(model, source.data, source.positions, str(file))
    issues = [*source.issues, *issues]
    if issues or config is None:
        raise ConfigError(issues)
    return config
