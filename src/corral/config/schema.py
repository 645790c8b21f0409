"""`corral.yaml`, schema version 1, as pydantic models.

Every section forbids unknown keys so that typos are reported (with file:line by the
loader) instead of silently ignored. Sections owned by a feature area live in their
own module (`agents.py`, `services.py`) and are composed here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from corral.config.agents import AgentConfig, RunsConfig, ToolsetConfig
from corral.config.alerts import AlertRouteConfig
from corral.config.knowledge import KnowledgeSection
from corral.config.presets import PRESETS
from corral.config.services import ServicesSection

WIRE_TYPES = ("openai", "anthropic", "gemini", "scripted")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# ---- providers -----------------------------------------------------------


class ScriptStep(Strict):
    """One reply of the scripted model. Exactly one of text / tool_calls / error."""

    text: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # [{"name": ..., "arguments": {...}}]
    error: Literal[
        "authentication", "permission", "not_found", "rate_limit", "context_length", "bad_request",
        "unavailable", "timeout",
    ] | None = None
    delay: float = 0.0  # seconds before the reply starts
    chunk_delay: float = 0.0  # seconds between streamed chunks
    usage: dict[str, int] | None = None


class ProviderConfig(Strict):
    """An upstream. ``type`` is a wire API or an OpenAI-compatible preset
    (see `corral.config.presets`)."""

    type: str = "openai"
    base_url: str | None = None
    api_key: SecretStr | None = None
    enabled: bool = True
    required: bool = False  # --strict-providers refuses to start if a required provider fails
    timeout: float = Field(default=120.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=100, ge=1)
    headers: dict[str, str] = Field(default_factory=dict)
    api_version: str | None = None  # azure-style ``api-version`` query, anthropic-version header
    passthrough: bool = False  # serve any "<provider name>/<upstream model>" (zero-config turns it on)
    # scripted provider only
    script: list[ScriptStep] = Field(default_factory=list)
    echo: bool = True  # scripted: with no script (or once it is used up) echo the last user message

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown provider type {value!r}; one of: {', '.join(sorted(PRESETS))}")
        return value


# ---- models (aliases) ----------------------------------------------------


class Deployment(Strict):
    provider: str
    model: str
    weight: float = Field(default=1.0, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)
    timeout: float | None = Field(default=None, gt=0)


class ModelConfig(Strict):
    """A named model alias. Either ``provider`` + ``model`` (one deployment) or
    ``deployments`` (several, balanced by ``strategy``)."""

    provider: str | None = None
    model: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    deployments: list[Deployment] = Field(default_factory=list)
    strategy: Literal["weighted", "least-busy", "lowest-latency"] = "weighted"
    fallbacks: list[str] = Field(default_factory=list)
    context_fallbacks: list[str] = Field(default_factory=list)
    context_window: int | None = Field(default=None, gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    timeout: float | None = Field(default=None, gt=0)
    num_retries: int = Field(default=2, ge=0)
    rpm: int | None = Field(default=None, ge=1)  # requests per minute for this alias, all callers together
    tpm: int | None = Field(default=None, ge=1)  # tokens per minute, likewise
    embedding: bool = False
    description: str | None = None

    @model_validator(mode="after")
    def _one_form(self) -> ModelConfig:
        if self.deployments and (self.provider or self.model):
            raise ValueError("give either provider/model or deployments, not both")
        if not self.deployments and not (self.provider and self.model):
            raise ValueError("needs provider and model (or a deployments list)")
        return self

    def all_deployments(self) -> list[Deployment]:
        if self.deployments:
            return self.deployments
        assert self.provider and self.model
        return [Deployment(provider=self.provider, model=self.model, params=self.params, timeout=self.timeout)]


# ---- server, storage, cache, auth, observability ---------------------------


class TLSConfig(Strict):
    cert_file: str
    key_file: str


class ServerConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    shutdown_timeout: float = Field(default=30.0, ge=0)
    cors_origins: list[str] = Field(default_factory=list)
    tls: TLSConfig | None = None
    # Python's collector (corral.process): allocations between young collections once
    # start-up is over (start-up's objects are frozen out of its sight); 0 leaves both alone.
    gc_young_threshold: int = Field(default=50_000, ge=0)


class DatabaseConfig(Strict):
    url: str | None = None  # None: sqlite under the data dir
    pool_size: int = Field(default=10, ge=1)
    # A transaction-mode pooler between Corral and Postgres (docs/store.md#pgbouncer);
    # the URL parameter ?pooler=pgbouncer says the same.
    pooler: Literal["pgbouncer"] | None = None
    echo: bool = False


class CacheConfig(Strict):
    url: str | None = None  # redis://... ; None: in-process
    prefix: str = "corral:"  # every Redis key and channel Corral uses starts with this


class RateLimits(Strict):
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)


class CallerLimits(RateLimits):
    """The limits of each JWT subject (or of each team), each with counters of its own."""

    max_budget: float | None = Field(default=None, ge=0)  # USD per budget period
    budget_duration: str | None = Field(default=None, pattern=r"^\s*[1-9]\d*\s*[smhdw]\s*$")  # 1h, 1d, 30d...
    model_limits: dict[str, RateLimits] = Field(default_factory=dict)


class JWTConfig(Strict):
    jwks_url: str
    issuer: str | None = None
    audience: str | None = None
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    cache_seconds: float = Field(default=300.0, gt=0)
    subject_claim: str = "sub"
    team_claim: str = "team"
    limits: CallerLimits = Field(default_factory=CallerLimits)  # each subject
    team_limits: CallerLimits = Field(default_factory=CallerLimits)  # each team named by team_claim


class AuthThrottleConfig(Strict):
    """Failed authentication from one client address, slowed down (docs/auth.md)."""

    limit: int = Field(default=10, ge=0)  # failures in the window answered at once
    window_seconds: float = Field(default=60.0, gt=0)
    base_delay: float = Field(default=0.25, ge=0)  # the first throttled failure waits this; doubles per failure
    max_delay: float = Field(default=10.0, ge=0)


class AuthConfig(Strict):
    master_key: SecretStr | None = None  # also CORRAL_MASTER_KEY
    api_keys: list[SecretStr] = Field(default_factory=list)  # static caller keys: models only, no admin
    required: bool | None = None  # None: required as soon as a master key or JWT is configured
    allow_unauthenticated: bool = False  # let `serve` listen beyond loopback with auth off (deliberately open)
    public_paths: list[str] = Field(
        default_factory=lambda: ["/health", "/healthz", "/readyz", "/.well-known/agent-card.json"]
    )
    jwt: JWTConfig | None = None
    throttle: AuthThrottleConfig = Field(default_factory=AuthThrottleConfig)


class LangfuseConfig(Strict):
    """Langfuse as the OTLP backend: ``{host}/api/public/otel/v1/traces`` with Basic auth
    (also from LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY, LANGFUSE_HOST)."""

    public_key: str | None = None
    secret_key: SecretStr | None = None
    host: str | None = None  # default https://cloud.langfuse.com


class TracingConfig(Strict):
    enabled: bool = False
    exporter: Literal["otlp", "console", "none"] = "otlp"
    endpoint: str | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)  # sent with every OTLP export
    service_name: str = "corral"
    capture_content: bool = False  # prompts and completions on spans (redacted)
    sampling_rate: float = Field(default=1.0, ge=0.0, le=1.0)  # parent-based: a caller's decision wins
    langfuse: LangfuseConfig | None = None


class ObservabilityConfig(Strict):
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "console"
    access_log: bool = True  # one `corral.request` line per model call (at log level info or lower)
    metrics: bool = True
    # A bearer token that opens GET /metrics only (for a Prometheus scrape), besides admin keys.
    metrics_token: SecretStr | None = None
    public_metrics: bool = False  # /metrics without any credential (put it behind a private network)
    tracing: TracingConfig = Field(default_factory=TracingConfig)


class PriceConfig(Strict):
    input: float = Field(ge=0)  # USD per million input tokens
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)


class RouterConfig(Strict):
    """How the router retries, backs off and cools down failing deployments."""

    backoff_base: float = Field(default=0.25, ge=0)  # seconds; doubled per retry, full jitter
    backoff_max: float = Field(default=8.0, ge=0)
    max_retry_after: float = Field(default=30.0, ge=0)  # a longer retry-after skips to fallbacks
    allowed_fails: int = Field(default=2, ge=1)  # consecutive failures before a cooldown
    cooldown_seconds: float = Field(default=30.0, ge=0)


class BudgetAlertRoute(AlertRouteConfig):
    """A route budget alerts go to (the fleet's alert route: webhook, Slack or Discord)."""

    events: list[str] = Field(default_factory=lambda: ["budget.*"])


class BudgetAlerts(Strict):
    """An alert when the spend of a key, team or JWT subject crosses a share of its
    ``max_budget`` (once per threshold per budget period)."""

    thresholds: list[float] = Field(default_factory=lambda: [50.0, 80.0, 100.0])  # percent
    routes: list[BudgetAlertRoute] = Field(default_factory=list)

    @field_validator("thresholds")
    @classmethod
    def _percentages(cls, value: list[float]) -> list[float]:
        if any(t <= 0 for t in value):
            raise ValueError("thresholds are percentages of the budget, each > 0")
        return sorted(set(value))


class BillingConfig(Strict):
    """How usage is made durable and how budgets are held (docs/limits.md, docs/store.md)."""

    spool: bool = True  # every usage row on local disk before the answer ends (a crash loses none)
    spool_dir: str | None = None  # default: <data dir>/spool
    fsync_interval: float = Field(default=0.1, ge=0)  # group commit; 0: leave it to the OS
    # Output tokens reserved against a budget for a call that sets no max_tokens.
    default_max_tokens: int = Field(default=4096, ge=1)
    alerts: BudgetAlerts = Field(default_factory=BudgetAlerts)


class VerificationConfig(Strict):
    enabled: bool = True
    strict: bool = False  # refuse to start when a required provider fails
    concurrency: int = Field(default=4, ge=1)
    timeout: float = Field(default=10.0, gt=0)
    completion_check: bool = False  # also send a minimal completion (costs a few tokens)


# ---- the root --------------------------------------------------------------


class CorralConfig(Strict):
    version: Literal[1] = 1
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    agents: dict[str, AgentConfig] = Field(default_factory=dict)
    tools: dict[str, ToolsetConfig] = Field(default_factory=dict)
    runs: RunsConfig = Field(default_factory=RunsConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    pricing: dict[str, PriceConfig] = Field(default_factory=dict)
    verification: VerificationConfig = Field(default_factory=VerificationConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    billing: BillingConfig = Field(default_factory=BillingConfig)
    services: ServicesSection = Field(default_factory=dict)
    knowledge: KnowledgeSection = Field(default_factory=dict)
    default_model: str | None = None  # used when a request names no model we know (zero-config)
