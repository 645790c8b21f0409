"""`corral generate compose`: Corral with Postgres, Redis and Qdrant, each health-checked,
started in dependency order, with every secret required through ``${VAR:?message}``.

Profiles: the core services (Corral, Postgres, Redis, and PgBouncer when the config
declares ``database.pooler: pgbouncer``) have none, so ``docker compose up -d`` starts
them; ``--profile agents`` adds Qdrant (agents' knowledge), ``--profile observability``
adds Prometheus scraping Corral's ``/metrics``. Every service has a memory (and CPU)
limit; Redis is capped below its limit with ``noeviction`` (`common.REDIS_MAXMEMORY`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.deploy import common as c
from corral.deploy.source import DeploySource


@dataclass(slots=True)
class ComposeOptions:
    image: str = c.IMAGE
    build_context: str | None = None  # relative to the compose file; None: pull `image` only
    dockerfile: str = "deploy/Dockerfile"
    config_source: str = "./corral.yaml"  # host path of the config, relative to the compose file
    qdrant: bool = True
    services_only: bool = False  # hybrid: only Postgres/Redis/Qdrant, published for a remote Corral
    observability: bool = True  # Prometheus (profile observability); needs prometheus.yml beside the file
    redis_maxmemory: str = c.REDIS_MAXMEMORY
    limits: dict[str, dict[str, str]] = field(default_factory=lambda: {
        name: dict(limit) for name, limit in DEFAULT_LIMITS.items()})


# deploy.resources.limits per service; Redis's container limit sits above its maxmemory
# (fork-free with persistence off, but replication buffers and fragmentation need room).
DEFAULT_LIMITS: dict[str, dict[str, str]] = {
    "corral": {"cpus": "2", "memory": "1g"},
    "postgres": {"cpus": "2", "memory": "1g"},
    "pgbouncer": {"cpus": "0.5", "memory": "128m"},
    "redis": {"cpus": "1", "memory": "512m"},
    "qdrant": {"cpus": "1", "memory": "1g"},
    "prometheus": {"cpus": "1", "memory": "512m"},
}
METRICS_KEY_FILE = "./metrics-key"  # a Corral key Prometheus sends; the observability profile needs it


def _required(name: str, why: str) -> str:
    return f"${{{name}:?{why}}}"


def healthcheck_command() -> list[str]:
    # The image has no curl: a tiny Python probe reads the port from the mounted config.
    return ["CMD", "python", "-m", "corral.deploy.healthcheck"]


def corral_service(source: DeploySource, opts: ComposeOptions) -> dict[str, Any]:
    port = c.fixed_port(source.config.server.port)
    password = _required(c.POSTGRES_PASSWORD_ENV, "set POSTGRES_PASSWORD in .env")
    database = f"postgresql://{c.POSTGRES_USER}:{password}@postgres:5432/{c.POSTGRES_DB}"
    if pooled(source):
        database = (f"postgresql://{c.POSTGRES_USER}:{password}@pgbouncer:{c.PGBOUNCER_PORT}/{c.POSTGRES_DB}"
                    "?pooler=pgbouncer")
    env: dict[str, str] = {
        "CORRAL_DATA_DIR": c.DATA_DIR,
        c.DATABASE_URL_ENV: database,
        c.REDIS_URL_ENV: "redis://redis:6379/0",
        c.MASTER_KEY_ENV: _required(c.MASTER_KEY_ENV, "set CORRAL_MASTER_KEY (a long random string) in .env"),
        c.METRICS_TOKEN_ENV: f"${{{c.METRICS_TOKEN_ENV}:-}}",  # optional: lets Prometheus scrape /metrics
    }
    for ref in source.references:
        if ref.name in env:
            continue
        env[ref.name] = f"${{{ref.name}:-}}" if ref.has_default else _required(ref.name, f"set {ref.name} in .env")
    service: dict[str, Any] = {"image": opts.image}
    if opts.build_context is not None:
        service["build"] = {"context": opts.build_context, "dockerfile": opts.dockerfile}
    depends: dict[str, dict[str, Any]] = {name: {"condition": "service_healthy"}
                                          for name in ("pgbouncer" if pooled(source) else "postgres", "redis")}
    if opts.qdrant and uses_qdrant(source):  # a knowledge base keeps its vectors there: a core service
        depends["qdrant"] = {"condition": "service_healthy"}
        env[QDRANT_URL_ENV] = "http://qdrant:6333"
    elif opts.qdrant:  # in the agents profile: without it Corral starts all the same
        depends["qdrant"] = {"condition": "service_healthy", "required": False}
    service |= {
        "command": c.serve_args(),
        "restart": "unless-stopped",
        "ports": [f"{port}:{port}"],
        "environment": env,
        "volumes": [f"{opts.config_source}:{c.CONFIG_PATH}:ro", f"corral-data:{c.DATA_DIR}"],
        "depends_on": depends,
        "healthcheck": {"test": healthcheck_command(), "interval": "15s", "timeout": "5s",
                        "retries": 3, "start_period": "20s"},
        "stop_grace_period": f"{int(source.config.server.shutdown_timeout) + 10}s",
    }
    return service


QDRANT_URL_ENV = "QDRANT_URL"  # a knowledge store's `url: ${QDRANT_URL:-...}` reaches the compose Qdrant


def uses_qdrant(source: DeploySource) -> bool:
    """A knowledge base of the config stores its vectors in Qdrant (not Qdrant's local mode)."""
    return any(b.store.type == "qdrant" and b.store.url and b.embedder is not None
               for b in source.config.knowledge.values())


def pooled(source: DeploySource) -> bool:
    """The config declares PgBouncer: Corral reaches Postgres through one."""
    return source.config.database.pooler == "pgbouncer"


def pgbouncer_service(password: str) -> dict[str, Any]:
    return {
        "image": c.PGBOUNCER_IMAGE,
        "restart": "unless-stopped",
        "environment": {"DB_HOST": "postgres", "DB_USER": c.POSTGRES_USER, "DB_PASSWORD": password,
                        "DB_NAME": c.POSTGRES_DB, "LISTEN_PORT": str(c.PGBOUNCER_PORT),
                        "POOL_MODE": "transaction", "AUTH_TYPE": "scram-sha-256",
                        "MAX_CLIENT_CONN": "1000", "DEFAULT_POOL_SIZE": "20"},
        "depends_on": {"postgres": {"condition": "service_healthy"}},
        "healthcheck": {"test": ["CMD", "pg_isready", "-h", "127.0.0.1", "-p", str(c.PGBOUNCER_PORT)],
                        "interval": "5s", "timeout": "5s", "retries": 10},
    }


def prometheus_service() -> dict[str, Any]:
    return {
        "image": c.PROMETHEUS_IMAGE,
        "profiles": ["observability"],
        "restart": "unless-stopped",
        "command": ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.retention.time=15d"],
        "ports": ["127.0.0.1:9090:9090"],
        "volumes": ["./prometheus.yml:/etc/prometheus/prometheus.yml:ro", "prometheus-data:/prometheus"],
        "secrets": ["corral_metrics_key"],
        "depends_on": {"corral": {"condition": "service_healthy"}},
        "healthcheck": {"test": ["CMD", "wget", "-q", "--spider", "http://127.0.0.1:9090/-/ready"],
                        "interval": "15s", "timeout": "5s", "retries": 5},
    }


def prometheus_config(source: DeploySource) -> dict[str, Any]:
    """prometheus.yml for the observability profile: scrape Corral's /metrics with a key."""
    port = c.fixed_port(source.config.server.port)
    return {
        "global": {"scrape_interval": "15s"},
        "scrape_configs": [{
            "job_name": "corral",
            "metrics_path": "/metrics",
            "authorization": {"type": "Bearer", "credentials_file": "/run/secrets/corral_metrics_key"},
            "static_configs": [{"targets": [f"corral:{port}"]}],
        }],
    }


def _limit(services: dict[str, Any], opts: ComposeOptions) -> None:
    for name, service in services.items():
        if name in opts.limits:
            service["deploy"] = {"resources": {"limits": dict(opts.limits[name])}}


def render(source: DeploySource, opts: ComposeOptions) -> dict[str, Any]:
    password = _required(c.POSTGRES_PASSWORD_ENV, "set POSTGRES_PASSWORD in .env")
    services: dict[str, Any] = {
        "corral": corral_service(source, opts),
        "postgres": {
            "image": c.POSTGRES_IMAGE,
            "restart": "unless-stopped",
            "environment": {"POSTGRES_DB": c.POSTGRES_DB, "POSTGRES_USER": c.POSTGRES_USER,
                            "POSTGRES_PASSWORD": password},
            "volumes": ["postgres-data:/var/lib/postgresql/data"],
            "healthcheck": {"test": ["CMD", "pg_isready", "-U", c.POSTGRES_USER, "-d", c.POSTGRES_DB],
                            "interval": "5s", "timeout": "5s", "retries": 10},
        },
        "redis": {
            "image": c.REDIS_IMAGE,
            "restart": "unless-stopped",
            # Limit counters must never be evicted: a cap with noeviction (common.REDIS_MAXMEMORY).
            "command": ["redis-server", "--save", "", "--appendonly", "no", "--maxmemory", opts.redis_maxmemory,
                        "--maxmemory-policy", "noeviction"],
            "healthcheck": {"test": ["CMD", "redis-cli", "ping"], "interval": "5s", "timeout": "3s", "retries": 10},
        },
    }
    if pooled(source) and not opts.services_only:
        services["pgbouncer"] = pgbouncer_service(password)
    volumes: dict[str, Any] = {"corral-data": {}, "postgres-data": {}}
    top: dict[str, Any] = {}
    if opts.qdrant:
        services["qdrant"] = {
            "image": c.QDRANT_IMAGE,
            **({} if uses_qdrant(source) else {"profiles": ["agents"]}),
            "restart": "unless-stopped",
            "volumes": ["qdrant-data:/qdrant/storage"],
            # The qdrant image ships bash but neither curl nor wget.
            "healthcheck": {"test": ["CMD", "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/6333 && "
                                     "printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q ' 200 ' <&3"],
                            "interval": "5s", "timeout": "3s", "retries": 10},
        }
        volumes["qdrant-data"] = {}
    if opts.services_only:
        _publish(services)
        del services["corral"]
        del volumes["corral-data"]
    elif opts.observability:
        services["prometheus"] = prometheus_service()
        volumes["prometheus-data"] = {}
        top["secrets"] = {"corral_metrics_key": {"file": METRICS_KEY_FILE}}
    _limit(services, opts)
    return {"name": "corral", "services": services, "volumes": volumes, **top}


def _publish(services: dict[str, Any]) -> None:
    """Open the services to a Corral on another machine; Redis then needs a password.
    Everything here is what that Corral needs, so nothing waits for a profile."""
    for service in services.values():
        service.pop("profiles", None)
    ports = {"postgres": 5432, "redis": 6379, "qdrant": 6333}
    for name, port in ports.items():
        if name in services:
            services[name]["ports"] = [f"{port}:{port}"]
    redis_password = _required("REDIS_PASSWORD", "set REDIS_PASSWORD in .env")
    services["redis"]["command"] += ["--requirepass", redis_password]
    services["redis"]["healthcheck"]["test"] = ["CMD-SHELL", "redis-cli -a \"$$REDIS_PASSWORD\" ping | grep -q PONG"]
    services["redis"]["environment"] = {"REDIS_PASSWORD": redis_password}


def config_source_for(compose_dir: Path, config_path: Path | None) -> str:
    """How the compose file, written in ``compose_dir``, names the config on the host."""
    if config_path is None:
        return "./corral.yaml"
    relative = os.path.relpath(config_path.resolve(), compose_dir.resolve())
    return relative if relative.startswith("..") else f"./{relative}"
