"""`corral generate compose` and the shipped deploy/docker-compose.yml and Dockerfile,
checked by parsing (there is no Docker engine where the tests run)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from corral.cli.main import build_app
from corral.config.loader import load_config
from corral.deploy import common
from corral.deploy.compose import ComposeOptions, prometheus_config, render
from corral.deploy.source import load_source
from corral.deploy.yamlio import dump

from .conftest import invoke

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def stack(sample_config: Path, cli: CliRunner, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    out = tmp_path / "stack"
    invoke(cli, "generate", "compose", "--config", str(sample_config), "--out", str(out))
    return yaml.safe_load((out / "docker-compose.yml").read_text()), out


def test_services_start_in_dependency_order_when_healthy(stack: tuple[dict[str, Any], Path]) -> None:
    compose, _ = stack
    services = compose["services"]
    assert set(services) == {"corral", "postgres", "redis", "qdrant", "prometheus"}
    assert services["corral"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"}, "redis": {"condition": "service_healthy"},
        "qdrant": {"condition": "service_healthy", "required": False}}  # agents profile: optional
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
    assert services["corral"]["healthcheck"]["test"] == ["CMD", "python", "-m", "corral.deploy.healthcheck"]
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]


def test_port_config_mount_and_secrets_follow_the_config(stack: tuple[dict[str, Any], Path]) -> None:
    compose, out = stack
    corral = compose["services"]["corral"]
    assert corral["ports"] == ["9191:9191"]
    assert corral["volumes"][0] == "./corral.yaml:/etc/corral/corral.yaml:ro"
    assert corral["command"] == ["serve", "--config", common.CONFIG_PATH, "--host", "0.0.0.0"]
    env = corral["environment"]
    assert env["CORRAL_DATA_DIR"] == "/var/lib/corral"
    assert env["OPENAI_API_KEY"] == "${OPENAI_API_KEY:?set OPENAI_API_KEY in .env}"
    assert env["LOCAL_KEY"] == "${LOCAL_KEY:-}"  # has a default in the config: optional here too
    assert env["CORRAL_MASTER_KEY"].startswith("${CORRAL_MASTER_KEY:?")
    assert "${POSTGRES_PASSWORD:?" in env["CORRAL_DATABASE_URL"]
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert corral["stop_grace_period"] == "30s"
    mounted = load_config(out / "corral.yaml", env={"OPENAI_API_KEY": "k", "CORRAL_DATABASE_URL": "postgresql://x/y"})
    assert mounted.config.database.url == "postgresql://x/y"
    assert mounted.config.server.port == 9191


def test_printing_refuses_a_config_whose_database_would_be_ignored(sample_config: Path, cli: CliRunner) -> None:
    result = cli.invoke(build_app(), ["generate", "compose", "--config", str(sample_config)])
    assert result.exit_code == 1
    assert "use --out DIR" in result.output


def test_shipped_compose_matches_the_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "CORRAL_DATABASE_URL", "CORRAL_REDIS_URL", "CORRAL_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    source = load_source(None)
    expected = dump(render(source, ComposeOptions(build_context="..")))
    assert (REPO / "deploy" / "docker-compose.yml").read_text() == expected
    assert (REPO / "deploy" / "corral.yaml").read_text() == source.text
    compose = yaml.safe_load(expected)
    assert compose["services"]["corral"]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert (REPO / "deploy" / "prometheus.yml").read_text() == dump(prometheus_config(source))


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_is_multistage_nonroot_and_probes_health_without_curl() -> None:
    steps = _instructions((REPO / "deploy" / "Dockerfile").read_text())
    froms = [rest for keyword, rest in steps if keyword == "FROM"]
    assert [f.split(" AS ")[-1] for f in froms] == ["build", "runtime"]
    assert any(k == "COPY" and rest.startswith("--from=build /opt/corral") for k, rest in steps)
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    env = " ".join(rest for keyword, rest in steps if keyword == "ENV")
    assert f"CORRAL_DATA_DIR={common.DATA_DIR}" in env and f"CORRAL_CONFIG={common.CONFIG_PATH}" in env
    healthcheck = next(rest for keyword, rest in steps if keyword == "HEALTHCHECK")
    assert healthcheck.endswith('CMD ["python", "-m", "corral.deploy.healthcheck"]')
    assert "curl" not in " ".join(rest for _, rest in steps)
    cmd = next(rest for keyword, rest in steps if keyword == "CMD")
    assert yaml.safe_load(cmd) == common.serve_args()
    assert shlex.split(next(rest for k, rest in steps if k == "ENTRYPOINT").strip("[]").replace(",", " ")) == [
        "corral"]


def test_services_only_publishes_the_dependencies_for_a_remote_corral(cli: CliRunner, tmp_path: Path) -> None:
    invoke(cli, "generate", "compose", "--services-only", "--out", str(tmp_path))
    compose = yaml.safe_load((tmp_path / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "qdrant"}
    assert {name: s["ports"] for name, s in services.items()} == {
        "postgres": ["5432:5432"], "redis": ["6379:6379"], "qdrant": ["6333:6333"]}
    assert services["redis"]["command"][-2:] == ["--requirepass", "${REDIS_PASSWORD:?set REDIS_PASSWORD in .env}"]
    assert "corral-data" not in compose["volumes"]
    probe = services["qdrant"]["healthcheck"]["test"][3]
    assert probe == ("exec 3<>/dev/tcp/127.0.0.1/6333 && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && "
                     "grep -q ' 200 ' <&3")


def test_compose_files_pass_the_compose_specification(stack: tuple[dict[str, Any], Path], cli: CliRunner,
                                                      tmp_path: Path) -> None:
    compose_spec = pytest.importorskip("compose_spec")
    _, out = stack
    hybrid = tmp_path / "hybrid"
    invoke(cli, "generate", "compose", "--services-only", "--out", str(hybrid))
    for path in (out / "docker-compose.yml", hybrid / "docker-compose.yml", REPO / "deploy" / "docker-compose.yml"):
        # Strict: an unknown key or a misspelt depends_on condition is rejected, as compose would.
        parsed = compose_spec.PyCompose.from_yaml(path.read_text())
        assert set(parsed.service_names()) <= {"corral", "postgres", "redis", "qdrant", "prometheus"}


def test_profiles_leave_the_core_always_on(stack: tuple[dict[str, Any], Path]) -> None:
    compose, out = stack
    profiles = {name: service.get("profiles") for name, service in compose["services"].items()}
    assert profiles == {"corral": None, "postgres": None, "redis": None, "qdrant": ["agents"],
                        "prometheus": ["observability"]}
    prometheus = compose["services"]["prometheus"]
    assert prometheus["secrets"] == ["corral_metrics_key"]
    assert compose["secrets"] == {"corral_metrics_key": {"file": "./metrics-key"}}
    scrape = yaml.safe_load((out / "prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["static_configs"] == [{"targets": ["corral:9191"]}]  # the config's port
    assert scrape["authorization"]["credentials_file"] == "/run/secrets/corral_metrics_key"


def test_every_service_has_limits_and_redis_never_evicts_counters(stack: tuple[dict[str, Any], Path]) -> None:
    compose, _ = stack
    limits = {name: s["deploy"]["resources"]["limits"] for name, s in compose["services"].items()}
    assert set(limits) == set(compose["services"]) and all("memory" in limit for limit in limits.values())
    command = compose["services"]["redis"]["command"]
    policy = command[command.index("--maxmemory-policy") + 1]
    cap = command[command.index("--maxmemory") + 1]
    assert policy == "noeviction"
    assert _bytes(cap) < _bytes(limits["redis"]["memory"])  # Redis refuses writes before the kernel kills it


def _bytes(size: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kmg])b?", size.lower()).groups()  # type: ignore[union-attr]
    return int(number) * 1024 ** "kmg".index(unit) * 1024


def test_a_declared_pgbouncer_sits_between_corral_and_postgres(sample_config: Path, cli: CliRunner,
                                                                tmp_path: Path) -> None:
    config = tmp_path / "pooled.yaml"
    config.write_text(sample_config.read_text().replace(
        "database:\n  url: sqlite:////srv/corral-db/corral.db", "database:\n  pooler: pgbouncer"))
    out = tmp_path / "pooled"
    invoke(cli, "generate", "compose", "--config", str(config), "--out", str(out))
    text = (out / "docker-compose.yml").read_text()
    compose = yaml.safe_load(text)
    services = compose["services"]
    bouncer = services["pgbouncer"]
    assert bouncer["environment"]["POOL_MODE"] == "transaction"
    assert bouncer["environment"]["DB_HOST"] == "postgres"
    assert bouncer["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "profiles" not in bouncer and bouncer["deploy"]["resources"]["limits"]["memory"] == "128m"
    url = services["corral"]["environment"]["CORRAL_DATABASE_URL"]
    assert url.startswith("postgresql://corral:${POSTGRES_PASSWORD:?") and url.endswith(
        "@pgbouncer:6432/corral?pooler=pgbouncer")
    assert "pgbouncer" in services["corral"]["depends_on"] and "postgres" not in services["corral"]["depends_on"]
    mounted = load_config(out / "corral.yaml", env={"OPENAI_API_KEY": "k", "CORRAL_DATABASE_URL": "postgresql://x/y"})
    assert mounted.config.database.pooler == "pgbouncer"
    compose_spec = pytest.importorskip("compose_spec")
    assert "pgbouncer" in compose_spec.PyCompose.from_yaml(text).service_names()
