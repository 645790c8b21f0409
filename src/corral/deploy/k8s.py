"""`corral generate k8s`: manifests for one namespace, derived from the config.

Probes hit the real endpoints (`/healthz`, `/readyz`) on the config's port; the config
file itself goes into a ConfigMap unchanged (its ``${VAR}``s are filled from the Secret
at start-up); secret *values* are never copied from the environment unless asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from corral.config.schema import CorralConfig
from corral.deploy import common as c
from corral.deploy.source import DeploySource, upstream_ports
from corral.store.engine import is_sqlite

Manifest = dict[str, Any]
APP = "corral"


@dataclass(slots=True)
class K8sOptions:
    namespace: str = "corral"
    image: str = c.IMAGE
    replicas: int = 2
    max_replicas: int = 10
    ingress_host: str = "corral.example.com"
    ingress_class: str = "nginx"
    postgres: bool | None = None  # None: only when the config has no external Postgres
    redis: bool | None = None  # None: only when the config has no cache URL
    storage: str = "10Gi"
    backup_schedule: str = "0 2 * * *"
    backup_keep_days: int = 14
    secret_values: Mapping[str, str] = field(default_factory=dict)  # only what the user passed in


def _meta(name: str, namespace: str, component: str = "server") -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component},
    }


def _selector(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component}


def wants_postgres(config: CorralConfig, option: bool | None) -> bool:
    if option is not None:
        return option
    return config.database.url is None or is_sqlite(config.database.url)


def wants_redis(config: CorralConfig, option: bool | None) -> bool:
    return config.cache.url is None if option is None else option


def secret_keys(source: DeploySource, postgres: bool) -> list[str]:
    keys = [*source.env_names]
    # The scrape token: the pods' prometheus.io annotations bring Prometheus, which sends it
    # (`corral generate prometheus --kubernetes`), and /metrics answers it without a master key.
    scrape = [c.METRICS_TOKEN_ENV] if source.config.observability.metrics else []
    for extra in (c.MASTER_KEY_ENV, *scrape, *([c.POSTGRES_PASSWORD_ENV] if postgres else [])):
        if extra not in keys:
            keys.append(extra)
    return keys


def secret(source: DeploySource, opts: K8sOptions, postgres: bool) -> Manifest:
    keys = secret_keys(source, postgres)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            **_meta("corral-secrets", opts.namespace),
            # Empty values fail loudly at start (`${VAR:?}`, Postgres refuses an empty password).
            "annotations": {"corral.dev/fill-in": ",".join(k for k in keys if k not in opts.secret_values)},
        },
        "type": "Opaque",
        "stringData": {key: opts.secret_values.get(key, "") for key in keys},
    }


def configmap(text: str, opts: K8sOptions) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta("corral-config", opts.namespace),
        "data": {"corral.yaml": text},
    }


def _container_env(opts: K8sOptions, postgres: bool, redis: bool) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": "CORRAL_DATA_DIR", "value": c.DATA_DIR}]
    if postgres:
        env.append({"name": c.POSTGRES_PASSWORD_ENV,
                    "valueFrom": {"secretKeyRef": {"name": "corral-secrets", "key": c.POSTGRES_PASSWORD_ENV}}})
        # $(VAR) expands a variable defined earlier in this list (Kubernetes dependent env).
        host = f"corral-postgres.{opts.namespace}.svc"
        env.append({"name": c.DATABASE_URL_ENV,
                    "value": f"postgresql://{c.POSTGRES_USER}:$({c.POSTGRES_PASSWORD_ENV})@{host}:5432/{c.POSTGRES_DB}"})
    if redis:
        env.append({"name": c.REDIS_URL_ENV, "value": f"redis://corral-redis.{opts.namespace}.svc:6379/0"})
    return env


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": 3,
            "failureThreshold": failures}


def _restricted() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}}


def deployment(source: DeploySource, text: str, opts: K8sOptions, postgres: bool, redis: bool) -> Manifest:
    config = source.config
    port = c.fixed_port(config.server.port)
    # A changed ConfigMap changes this annotation, which rolls the pods onto the new config.
    pod_annotations = {"checksum/config": c.digest(text)}
    if config.observability.metrics:
        pod_annotations |= {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                            "prometheus.io/path": "/metrics"}
    container = {
        "name": "corral",
        "image": opts.image,
        "args": c.serve_args(),
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": _container_env(opts, postgres, redis),
        "envFrom": [{"secretRef": {"name": "corral-secrets"}}],
        "volumeMounts": [
            {"name": "config", "mountPath": c.CONFIG_DIR, "readOnly": True},
            {"name": "data", "mountPath": c.DATA_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "startupProbe": _probe(c.LIVENESS_PATH, 2, 30),
        "livenessProbe": _probe(c.LIVENESS_PATH, 10, 3),
        "readinessProbe": _probe(c.READINESS_PATH, 5, 2),
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        "securityContext": _restricted(),
    }
    pod_spec = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": c.RUN_AS_UID, "runAsGroup": c.RUN_AS_UID,
                            "fsGroup": c.RUN_AS_UID, "seccompProfile": {"type": "RuntimeDefault"}},
        # The server drains in-flight streams for shutdown_timeout after SIGTERM.
        "terminationGracePeriodSeconds": int(config.server.shutdown_timeout) + 10,
        "containers": [container],
        "volumes": [
            {"name": "config", "configMap": {"name": "corral-config"}},
            {"name": "data", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta("corral", opts.namespace),
        "spec": {
            "replicas": opts.replicas,
            "selector": {"matchLabels": _selector("server")},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": _selector("server"), "annotations": pod_annotations},
                         "spec": pod_spec},
        },
    }


def service(opts: K8sOptions) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta("corral", opts.namespace),
        "spec": {"type": "ClusterIP", "selector": _selector("server"),
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
    }


def hpa(opts: K8sOptions) -> Manifest:
    def utilization(name: str, percent: int) -> dict[str, Any]:
        return {"type": "Resource",
                "resource": {"name": name, "target": {"type": "Utilization", "averageUtilization": percent}}}

    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta("corral", opts.namespace),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "corral"},
            "minReplicas": opts.replicas,
            "maxReplicas": max(opts.max_replicas, opts.replicas),
            "metrics": [utilization("cpu", 70), utilization("memory", 80)],
        },
    }


def pdb(opts: K8sOptions) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta("corral", opts.namespace),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": _selector("server")}},
    }


def ingress(opts: K8sOptions) -> Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            **_meta("corral", opts.namespace),
            "annotations": {
                "cert-manager.io/cluster-issuer": "letsencrypt-prod",
                # Streams (SSE) must pass through unbuffered and may run for minutes.
                "nginx.ingress.kubernetes.io/proxy-buffering": "off",
                "nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
                "nginx.ingress.kubernetes.io/proxy-body-size": "16m",
            },
        },
        "spec": {
            "ingressClassName": opts.ingress_class,
            "tls": [{"hosts": [opts.ingress_host], "secretName": "corral-tls"}],
            "rules": [{"host": opts.ingress_host, "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "corral", "port": {"name": "http"}}}}]}}],
        },
    }


def network_policies(source: DeploySource, opts: K8sOptions, postgres: bool, redis: bool) -> list[Manifest]:
    port = c.fixed_port(source.config.server.port)
    dns = {"to": [{"namespaceSelector": {}}],
           "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    egress: list[dict[str, Any]] = [dns]
    if postgres:
        egress.append({"to": [{"podSelector": {"matchLabels": _selector("postgres")}}],
                       "ports": [{"protocol": "TCP", "port": 5432}]})
    if redis:
        egress.append({"to": [{"podSelector": {"matchLabels": _selector("redis")}}],
                       "ports": [{"protocol": "TCP", "port": 6379}]})
    # Model providers live outside the cluster: allow the ports the config's base URLs use.
    egress.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
                   "ports": [{"protocol": "TCP", "port": p} for p in upstream_ports(source.config)]})
    server = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta("corral", opts.namespace),
        "spec": {
            "podSelector": {"matchLabels": _selector("server")},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
                {"podSelector": {}},
            ], "ports": [{"protocol": "TCP", "port": port}]}],
            "egress": egress,
        },
    }
    policies = [server]
    for component, db_port, enabled in (("postgres", 5432, postgres), ("redis", 6379, redis)):
        if not enabled:
            continue
        allowed = [{"podSelector": {"matchLabels": _selector("server")}}]
        if component == "postgres":
            allowed.append({"podSelector": {"matchLabels": _selector("backup")}})
        policies.append({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta(f"corral-{component}", opts.namespace, component),
            "spec": {"podSelector": {"matchLabels": _selector(component)}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": allowed, "ports": [{"protocol": "TCP", "port": db_port}]}]},
        })
    return policies
