"""`corral generate k8s`: every manifest parses, and its ports, probes, paths and env
names come from the config it was generated from."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from typer.testing import CliRunner

from corral.cli.main import build_app
from corral.config.loader import load_config
from corral.deploy import k8s, k8s_data
from corral.deploy.source import load_source

from .conftest import invoke

REPO = Path(__file__).resolve().parents[2]


def _docs(out: Path) -> dict[str, list[dict[str, Any]]]:
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d] for p in sorted(out.glob("*.yaml"))}


def _by_kind(files: dict[str, list[dict[str, Any]]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for docs in files.values() for d in docs if "metadata" in d}


@pytest.fixture
def manifests(sample_config: Path, cli: CliRunner, tmp_path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    out = tmp_path / "k8s"
    invoke(cli, "generate", "k8s", "--config", str(sample_config), "--out", str(out),
           "--namespace", "agents", "--image", "registry.example/corral:1.2", "--replicas", "3")
    return _by_kind(_docs(out))


def test_every_required_kind_is_generated_once(manifests: dict[tuple[str, str], dict[str, Any]]) -> None:
    kinds = sorted(kind for kind, _ in manifests)
    for kind in ("Namespace", "Secret", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
                 "Ingress", "StatefulSet", "CronJob", "NetworkPolicy", "PersistentVolumeClaim"):
        assert kind in kinds, kind
    assert all(m["metadata"].get("namespace", "agents") == "agents" for m in manifests.values()
               if m["kind"] != "Namespace")


def test_manifests_pass_strict_kubernetes_schema_validation(
    manifests: dict[tuple[str, str], dict[str, Any]],
) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    version = kubernetes_validate.latest_version()
    for (kind, name), manifest in manifests.items():
        try:
            # strict: a misspelt or misplaced field is an error, as `kubectl apply` would make it
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{kind}/{name}: {exc}")


def test_probes_and_ports_use_the_configured_port(manifests: dict[tuple[str, str], dict[str, Any]]) -> None:
    pod = manifests[("Deployment", "corral")]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["ports"] == [{"name": "http", "containerPort": 9191, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["args"] == ["serve", "--config", "/etc/corral/corral.yaml", "--host", "0.0.0.0"]
    assert container["image"] == "registry.example/corral:1.2"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["terminationGracePeriodSeconds"] == 30  # shutdown_timeout 20 + 10
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert manifests[("Deployment", "corral")]["spec"]["replicas"] == 3
    assert manifests[("HorizontalPodAutoscaler", "corral")]["spec"]["minReplicas"] == 3
    netpol = manifests[("NetworkPolicy", "corral")]["spec"]
    assert netpol["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 9191}]
    egress_ports = {p["port"] for rule in netpol["egress"] for p in rule.get("ports", [])}
    assert {53, 5432, 6379, 443, 11434} <= egress_ports  # 11434: the local provider's base_url


def test_secret_names_every_variable_and_holds_no_value(
    sample_config: Path, cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-value-never-copied")
    out = tmp_path / "k8s"
    invoke(cli, "generate", "k8s", "--config", str(sample_config), "--out", str(out))
    secret = _by_kind(_docs(out))[("Secret", "corral-secrets")]
    assert list(secret["stringData"]) == ["OPENAI_API_KEY", "LOCAL_KEY", "CORRAL_MASTER_KEY",
                                           "CORRAL_METRICS_TOKEN", "POSTGRES_PASSWORD"]
    assert set(secret["stringData"].values()) == {""}
    assert all("sk-live-value-never-copied" not in p.read_text() for p in out.iterdir())
    assert (out / "10-secret.yaml").stat().st_mode & 0o777 == 0o600


def test_secrets_from_env_copies_only_when_asked(
    sample_config: Path, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-given")
    text = invoke(cli, "generate", "k8s", "--config", str(sample_config), "--secrets-from-env")
    secret = next(d for d in yaml.safe_load_all(text) if d and d["kind"] == "Secret")
    assert secret["stringData"]["OPENAI_API_KEY"] == "sk-given"
    assert secret["metadata"]["annotations"]["corral.dev/fill-in"] == \
        "LOCAL_KEY,CORRAL_MASTER_KEY,CORRAL_METRICS_TOKEN,POSTGRES_PASSWORD"


def test_configmap_is_the_config_pointed_at_the_cluster_database(
    manifests: dict[tuple[str, str], dict[str, Any]], tmp_path: Path
) -> None:
    text = manifests[("ConfigMap", "corral-config")]["data"]["corral.yaml"]
    assert "# a production-ish config" in text  # comments survive
    mounted = tmp_path / "mounted.yaml"
    mounted.write_text(text)
    env = {"OPENAI_API_KEY": "k", "CORRAL_DATABASE_URL": "postgresql://corral:pw@corral-postgres:5432/corral"}
    config = load_config(mounted, env=env).config
    assert config.database.url == env["CORRAL_DATABASE_URL"]  # the SQLite path no longer wins
    assert config.server.port == 9191
    container = manifests[("Deployment", "corral")]["spec"]["template"]["spec"]["containers"][0]
    env_names = [e["name"] for e in container["env"]]
    assert env_names.index("POSTGRES_PASSWORD") < env_names.index("CORRAL_DATABASE_URL")
    url = next(e["value"] for e in container["env"] if e["name"] == "CORRAL_DATABASE_URL")
    assert url == "postgresql://corral:$(POSTGRES_PASSWORD)@corral-postgres.agents.svc:5432/corral"
    statefulset = manifests[("StatefulSet", "corral-postgres")]["spec"]
    assert statefulset["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"


def test_backup_cronjob_dumps_the_generated_database(manifests: dict[tuple[str, str], dict[str, Any]]) -> None:
    job = manifests[("CronJob", "corral-backup")]["spec"]
    container = job["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    script = container["command"][2]
    assert "pg_dump --format=custom --host=corral-postgres.agents.svc --username=corral --dbname=corral" in script
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["key"] == "POSTGRES_PASSWORD"
    assert job["concurrencyPolicy"] == "Forbid"


def test_sqlite_without_cluster_postgres_is_refused(sample_config: Path, cli: CliRunner) -> None:
    result = cli.invoke(build_app(), ["generate", "k8s", "--config", str(sample_config), "--no-postgres"])
    assert result.exit_code == 1
    assert "SQLite lives on one machine" in result.output


def test_external_postgres_is_kept_and_not_duplicated(tmp_path: Path) -> None:
    path = tmp_path / "corral.yaml"
    path.write_text("version: 1\ndatabase:\n  url: ${DATABASE_URL:?}\ncache:\n  url: redis://cache:6379/0\n")
    source = load_source(path, env={"DATABASE_URL": "postgresql://db.internal/corral"})
    files = k8s_data.render(source, k8s.K8sOptions())
    assert "30-postgres.yaml" not in files and "31-redis.yaml" not in files and "60-backup.yaml" not in files
    assert files["20-configmap.yaml"][0]["data"]["corral.yaml"] == path.read_text()
    container = files["40-deployment.yaml"][0]["spec"]["template"]["spec"]["containers"][0]
    assert [e["name"] for e in container["env"]] == ["CORRAL_DATA_DIR"]


def test_checked_in_examples_match_the_generator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "CORRAL_DATABASE_URL", "CORRAL_REDIS_URL", "CORRAL_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    files = k8s_data.render(load_source(None), k8s.K8sOptions())
    from corral.deploy import yamlio

    shipped = REPO / "deploy" / "k8s"
    assert sorted(p.name for p in shipped.glob("*.yaml")) == sorted(files)
    for name, docs in files.items():
        assert (shipped / name).read_text() == yamlio.dump_all(docs), f"deploy/k8s/{name} is stale"


@pytest.mark.postgres
@pytest.mark.skipif(shutil.which("pg_dump") is None or shutil.which("pg_restore") is None,
                    reason="the PostgreSQL client tools are not installed")
def test_backup_cronjob_script_dumps_a_real_database(postgres_url: str, tmp_path: Path) -> None:
    """Run the CronJob's own script against a real Postgres, with only host/db/dir swapped."""
    files = k8s_data.render(load_source(None), k8s.K8sOptions(namespace="corral"))
    cronjob = files["60-backup.yaml"][1]
    script = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"][2]
    parts = urlsplit(postgres_url)
    backups = tmp_path / "backups"
    backups.mkdir()
    stale = backups / "corral-20000101-000000.dump"
    stale.write_text("old")
    os.utime(stale, (time.time() - 30 * 86400, time.time() - 30 * 86400))
    local = (script.replace("--host=corral-postgres.corral.svc", f"--host={parts.hostname} --port={parts.port}")
             .replace("--username=corral", f"--username={parts.username}")
             .replace("--dbname=corral", f"--dbname={parts.path.lstrip('/')}")
             .replace("/backups", str(backups)))
    assert local.count(str(backups)) == 2 and "corral-postgres" not in local
    result = subprocess.run(["/bin/sh", "-c", local], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    dumps = sorted(backups.iterdir())
    assert len(dumps) == 1 and dumps[0] != stale  # the 30-day-old dump was pruned
    assert dumps[0].read_bytes()[:5] == b"PGDMP"
    listing = subprocess.run(["pg_restore", "--list", str(dumps[0])], capture_output=True, text=True, check=False)
    assert listing.returncode == 0, listing.stderr
