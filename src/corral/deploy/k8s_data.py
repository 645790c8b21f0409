"""The stateful half of `corral generate k8s`: Postgres (StatefulSet + PVC), Redis, and
a nightly backup CronJob, plus the function that assembles every manifest."""

from __future__ import annotations

from typing import Any

from corral.deploy import common as c
from corral.deploy import k8s
from corral.deploy.common import DeployError
from corral.deploy.k8s import K8sOptions, Manifest, _meta, _restricted, _selector
from corral.deploy.source import DeploySource, container_text
from corral.store.engine import is_sqlite


def _password_env() -> dict[str, Any]:
    return {"name": c.POSTGRES_PASSWORD_ENV,
            "valueFrom": {"secretKeyRef": {"name": "corral-secrets", "key": c.POSTGRES_PASSWORD_ENV}}}


def postgres(opts: K8sOptions) -> list[Manifest]:
    ready = {"exec": {"command": ["pg_isready", "-U", c.POSTGRES_USER, "-d", c.POSTGRES_DB]},
             "periodSeconds": 10, "timeoutSeconds": 5}
    container = {
        "name": "postgres",
        "image": c.POSTGRES_IMAGE,
        "ports": [{"name": "postgres", "containerPort": 5432}],
        "env": [
            {"name": "POSTGRES_DB", "value": c.POSTGRES_DB},
            {"name": "POSTGRES_USER", "value": c.POSTGRES_USER},
            _password_env(),
            {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
        ],
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}],
        "readinessProbe": ready,
        "livenessProbe": {**ready, "periodSeconds": 30, "failureThreshold": 5},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta("corral-postgres", opts.namespace, "postgres"),
        "spec": {
            "serviceName": "corral-postgres",
            "replicas": 1,
            "selector": {"matchLabels": _selector("postgres")},
            "template": {"metadata": {"labels": _selector("postgres")},
                         "spec": {"securityContext": {"fsGroup": 70}, "containers": [container]}},
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": opts.storage}}},
            }],
        },
    }
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta("corral-postgres", opts.namespace, "postgres"),
        "spec": {"clusterIP": "None", "selector": _selector("postgres"),
                 "ports": [{"name": "postgres", "port": 5432, "targetPort": "postgres"}]},
    }
    return [statefulset, svc]


def redis(opts: K8sOptions) -> list[Manifest]:
    container = {
        "name": "redis",
        "image": c.REDIS_IMAGE,
        # Limits and fan-out only: nothing to persist. Capped under the container's limit with
        # noeviction, so limit counters are never evicted (common.REDIS_MAXMEMORY).
        "args": ["--save", "", "--appendonly", "no", "--maxmemory", "192mb", "--maxmemory-policy", "noeviction"],
        "ports": [{"name": "redis", "containerPort": 6379}],
        "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 10},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": _restricted(),
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta("corral-redis", opts.namespace, "redis"),
        "spec": {"replicas": 1, "selector": {"matchLabels": _selector("redis")},
                 "template": {"metadata": {"labels": _selector("redis")},
                              "spec": {"securityContext": {"runAsNonRoot": True, "runAsUser": 999},
                                       "containers": [container]}}},
    }
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta("corral-redis", opts.namespace, "redis"),
        "spec": {"selector": _selector("redis"), "ports": [{"name": "redis", "port": 6379, "targetPort": "redis"}]},
    }
    return [deployment, svc]


def backup(opts: K8sOptions) -> list[Manifest]:
    host = f"corral-postgres.{opts.namespace}.svc"
    script = (
        "set -eu\n"
        'file="/backups/corral-$(date +%Y%m%d-%H%M%S).dump"\n'
        f'pg_dump --format=custom --host={host} --username={c.POSTGRES_USER} --dbname={c.POSTGRES_DB} '
        '--file="$file.partial"\n'
        'mv "$file.partial" "$file"\n'
        f"find /backups -name 'corral-*.dump' -mtime +{opts.backup_keep_days} -delete\n"
        'echo "backup written: $file"\n'
    )
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta("corral-backups", opts.namespace, "backup"),
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": opts.storage}}},
    }
    container = {
        "name": "backup",
        "image": c.POSTGRES_IMAGE,
        "command": ["/bin/sh", "-c", script],
        "env": [{**_password_env(), "name": "PGPASSWORD"}],
        "volumeMounts": [{"name": "backups", "mountPath": "/backups"}],
    }
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _meta("corral-backup", opts.namespace, "backup"),
        "spec": {
            "schedule": opts.backup_schedule,
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {"spec": {"backoffLimit": 2, "template": {
                "metadata": {"labels": _selector("backup")},
                "spec": {"restartPolicy": "OnFailure", "containers": [container],
                         "volumes": [{"name": "backups", "persistentVolumeClaim": {"claimName": "corral-backups"}}]},
            }}},
        },
    }
    return [pvc, cronjob]


def render(source: DeploySource, opts: K8sOptions) -> dict[str, list[Manifest]]:
    """File name -> the manifests it holds, in the order `kubectl apply` should see them."""
    use_pg = k8s.wants_postgres(source.config, opts.postgres)
    use_redis = k8s.wants_redis(source.config, opts.redis)
    db_url = source.config.database.url
    if not use_pg and (db_url is None or is_sqlite(db_url)):
        raise DeployError(
            "SQLite lives on one machine and pods are replaceable: keep the generated Postgres "
            "(drop --no-postgres) or set database.url to an external PostgreSQL"
        )
    text = container_text(source, database_env=c.DATABASE_URL_ENV if use_pg else None,
                          cache_env=c.REDIS_URL_ENV if use_redis else None)
    files: dict[str, list[Manifest]] = {
        "00-namespace.yaml": [{"apiVersion": "v1", "kind": "Namespace",
                               "metadata": {"name": opts.namespace, "labels": {"app.kubernetes.io/name": "corral"}}}],
        "10-secret.yaml": [k8s.secret(source, opts, use_pg)],
        "20-configmap.yaml": [k8s.configmap(text, opts)],
    }
    if use_pg:
        files["30-postgres.yaml"] = postgres(opts)
    if use_redis:
        files["31-redis.yaml"] = redis(opts)
    files["40-deployment.yaml"] = [k8s.deployment(source, text, opts, use_pg, use_redis)]
    files["41-service.yaml"] = [k8s.service(opts)]
    files["42-hpa.yaml"] = [k8s.hpa(opts), k8s.pdb(opts)]
    files["43-ingress.yaml"] = [k8s.ingress(opts)]
    files["50-networkpolicy.yaml"] = k8s.network_policies(source, opts, use_pg, use_redis)
    if use_pg:
        files["60-backup.yaml"] = backup(opts)
    files["kustomization.yaml"] = [{
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [name for name in files if name != "kustomization.yaml"],
    }]
    return files
