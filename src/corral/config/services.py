"""The `services:` section (Postgres, Redis, vector stores... that Corral depends on).
Owned by the boot manager (`corral.boot`).

Each entry says where a service lives (host/port or URL), whether Corral may start it
(a command or a docker compose service) or only verifies it (`remote`), what it
depends on, and how it is health-checked. `SVC_<NAME>_*` environment overrides are
applied by `corral.boot.specs`, not here, so a loaded config stays what the file says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

ServiceType = Literal["postgres", "redis", "qdrant", "chroma", "http", "tcp", "command"]
HealthKind = Literal["postgres", "redis", "qdrant", "chroma", "http", "tcp", "command"]

# Services implied by other sections; a `depends_on` may name them without declaring them.
IMPLIED_SERVICE_NAMES = ("postgres", "redis")

DEFAULT_PORTS: dict[str, int] = {"postgres": 5432, "redis": 6379, "qdrant": 6333, "chroma": 8000}


class HealthCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: HealthKind | None = None  # None: follows the service type
    path: str | None = None  # http: the path to GET (default "/"); qdrant/chroma have their own
    timeout: float = Field(default=5.0, gt=0)  # seconds for one probe
    command: list[str] | str | None = None  # kind=command: healthy when it exits 0
    expect_status: list[int] = Field(default_factory=list)  # http: empty means any 2xx


class StartConfig(BaseModel):
    """How to start the service locally when it is not already running."""

    model_config = ConfigDict(extra="forbid")

    command: list[str] | str | None = None
    cwd: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    compose_service: str | None = None
    compose_file: str | None = None
    compose_profile: str | None = None

    @model_validator(mode="after")
    def _one_way(self) -> StartConfig:
        if self.command and self.compose_service:
            raise ValueError("give either start.command or start.compose_service, not both")
        if not self.command and not self.compose_service:
            raise ValueError("start needs a command or a compose_service")
        return self


class ServiceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: ServiceType
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    url: str | None = None
    enabled: bool = True
    required: bool = True
    remote: bool = False  # never started by Corral, only probed (for real)
    depends_on: list[str] = Field(default_factory=list)
    health: HealthCheck = Field(default_factory=HealthCheck)
    start: StartConfig | None = None
    retries: int = Field(default=8, ge=0)  # probes after the first one
    deadline: float = Field(default=60.0, gt=0)  # seconds this service may take to become healthy
    backoff: float = Field(default=0.25, gt=0)  # first retry delay; doubles, with jitter, up to 5 s

    @model_validator(mode="after")
    def _addressable(self) -> ServiceConfig:
        kind = self.health.kind or self.type
        if kind == "command":
            if not self.health.command:
                raise ValueError("a command health check needs health.command")
        elif not self.url and not self.host and self.port is None:
            raise ValueError("needs url, or host and/or port")
        return self


def check_dependency_graph(services: dict[str, ServiceConfig]) -> dict[str, ServiceConfig]:
    """Reject unknown `depends_on` names and dependency cycles."""
    known = set(services) | set(IMPLIED_SERVICE_NAMES)
    for name, service in services.items():
        for dep in service.depends_on:
            if dep == name:
                raise ValueError(f"service {name!r} depends on itself")
            if dep not in known:
                raise ValueError(f"service {name!r} depends on unknown service {dep!r}")
    cycle = find_cycle({name: list(s.depends_on) for name, s in services.items()})
    if cycle:
        raise ValueError("dependency cycle: " + " -> ".join(cycle))
    return services


def find_cycle(graph: Mapping[str, list[str]]) -> list[str] | None:
    """A cycle in `graph` (node -> dependencies) as a path that ends where it starts."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in graph.get(node, []):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


ServicesSection = Annotated[dict[str, ServiceConfig], AfterValidator(check_dependency_graph)]
