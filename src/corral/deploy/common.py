"""Names and paths every deployment shares, so the image, compose, Kubernetes and
systemd outputs agree with each other and with the docs."""

from __future__ import annotations

import hashlib

CONFIG_DIR = "/etc/corral"
CONFIG_PATH = f"{CONFIG_DIR}/corral.yaml"
DATA_DIR = "/var/lib/corral"
IMAGE = "corral:latest"  # built from deploy/Dockerfile; --image points at your registry
POSTGRES_IMAGE = "postgres:16-alpine"
REDIS_IMAGE = "redis:7-alpine"
QDRANT_IMAGE = "qdrant/qdrant:v1.12.4"
PGBOUNCER_IMAGE = "edoburu/pgbouncer:latest"  # configured through its environment; pin it in production
PROMETHEUS_IMAGE = "prom/prometheus:v2.54.1"
PGBOUNCER_PORT = 6432
# Redis holds rate-limit and budget counters: evicting one would silently reset a limit,
# so Redis gets a memory cap under its container's limit and refuses writes at the cap
# (noeviction) rather than dropping keys: a limited call then fails closed (503
# limits_unavailable, docs/limits.md) instead of passing on a counter reset to zero.
REDIS_MAXMEMORY = "384mb"
POSTGRES_DB = "corral"
POSTGRES_USER = "corral"
RUN_AS_UID = 10001
MASTER_KEY_ENV = "CORRAL_MASTER_KEY"
METRICS_TOKEN_ENV = "CORRAL_METRICS_TOKEN"  # the bearer token Prometheus scrapes /metrics with
DATABASE_URL_ENV = "CORRAL_DATABASE_URL"
REDIS_URL_ENV = "CORRAL_REDIS_URL"
POSTGRES_PASSWORD_ENV = "POSTGRES_PASSWORD"
LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"
HEALTH_PATH = "/health"


class DeployError(ValueError):
    """The config cannot be deployed as asked (e.g. port 0, which nothing can reach)."""


def serve_args(config_path: str = CONFIG_PATH) -> list[str]:
    # Containers must listen on all interfaces; the config's host (127.0.0.1 by default)
    # is right for a laptop and wrong inside a pod, so the command line overrides it.
    return ["serve", "--config", config_path, "--host", "0.0.0.0"]


def fixed_port(port: int) -> int:
    if port == 0:
        raise DeployError("server.port is 0 (a random port); a deployment needs a fixed port")
    return port


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
