"""`corral generate compose`: Corral with Postgres, Redis and Qdrant, each health-checked,
started in dependency order, with every secret required through ``${VAR:?message}``."""

from __future__ import annotations

import os
from dataclasses import dataclass
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


def _required(name: str, why: str) -> str:
    return f"${{{name}:?{why}}}"


def healthcheck_command() -> list[str]:
    # The image has no curl: a tiny Python probe reads the port from the mounted config.
    return ["CMD", "python", "-m", "corral.deploy.healthcheck"]


def corral_service(source: DeploySource, opts: ComposeOptions) -> dict[str, Any]:
    port = c.fixed_port(source.config.server.port)
    password = _required(c.POSTGRES_PASSWORD_ENV, "set POSTGRES_PASSWORD in .env")
    env: dict[str, str] = {
        "CORRAL_DATA_DIR": c.DATA_DIR,
        c.DATABASE_URL_ENV: f"postgresql://{c.POSTGRES_USER}:{password}@postgres:5432/{c.POSTGRES_DB}",
        c.REDIS_URL_ENV: "redis://redis:6379/0",
        c.MASTER_KEY_ENV: _required(c.MASTER_KEY_ENV, "set CORRAL_MASTER_KEY (a long random string) in .env"),
    }
    for ref in source.references:
        if ref.name in env:
            continue
        env[ref.name] = f"${{{ref.name}:-}}" if ref.has_default else _required(ref.name, f"set {ref.name} in .env")
    service: dict[str, Any] = {"image": opts.image}
    if opts.build_context is not None:
        service["build"] = {"context": opts.build_context, "dockerfile": opts.dockerfile}
    depends = {name: {"condition": "service_healthy"} for name in ("postgres", "redis")}
    if opts.qdrant:
        depends["qdrant"] = {"condition": "service_healthy"}
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
            "command": ["redis-server", "--save", "", "--appendonly", "no"],
            "healthcheck": {"test": ["CMD", "redis-cli", "ping"], "interval": "5s", "timeout": "3s", "retries": 10},
        },
    }
    volumes: dict[str, Any] = {"corral-data": {}, "postgres-data": {}}
    if opts.qdrant:
        services["qdrant"] = {
            "image": c.QDRANT_IMAGE,
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
    return {"name": "corral", "services": services, "volumes": volumes}


def _publish(services: dict[str, Any]) -> None:
    """Open the services to a Corral on another machine; Redis then needs a password."""
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
