"""`corral generate systemd|launchd|env`: units and plists parse, and their commands,
paths, ports and hardening follow the configs they came from."""

from __future__ import annotations

import configparser
import os
import plistlib
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.config.fleet import NodeConfig, SupervisorConfig, load_fleet_config
from corral.deploy.source import template_path

from .conftest import invoke


def _unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Parse a unit, keeping repeated keys (systemd allows several Environment= lines)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    sections: dict[str, dict[str, list[str]]] = {name: {} for name in parser.sections()}
    current = ""
    for line in path.read_text().splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        elif "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            sections[current].setdefault(key, []).append(value)
    return sections


@pytest.fixture
def fleet_configs(tmp_path: Path) -> tuple[Path, Path]:
    supervisor = tmp_path / "supervisor.yaml"
    supervisor.write_text("version: 1\nserver:\n  port: 9420\n  http_port: 9421\n"
                          "database_url: sqlite:////srv/fleet/fleet.db\n")
    node = tmp_path / "node.yaml"
    node.write_text(
        "version: 1\nnode_id: n1\nsupervisor_url: ws://hub:9420\nstate_dir: /srv/node-state\n"
        "backends:\n  oc:\n    type: opencode\n"
        "projects:\n  - {name: web, directory: /home/dev/web, backend: oc}\n"
    )
    return supervisor, node


@pytest.fixture
def units(sample_config: Path, fleet_configs: tuple[Path, Path], cli: CliRunner, tmp_path: Path) -> Path:
    supervisor, node = fleet_configs
    out = tmp_path / "units"
    invoke(cli, "generate", "systemd", "--role", "all", "--config", str(sample_config),
           "--supervisor-config", str(supervisor), "--node-config", str(node), "--out", str(out),
           "--prefix", "/opt/c", "--config-dir", "/etc/c", "--data-dir", "/data/c", "--log-dir", "/logs/c",
           "--user", "svc")
    return out


def test_one_hardened_unit_per_role(units: Path) -> None:
    assert sorted(p.name for p in units.iterdir()) == ["corral-node.service", "corral-supervisor.service",
                                                        "corral.service"]
    for name, role, config in (("corral", "serve", "corral.yaml"), ("corral-supervisor", "supervisor",
                               "supervisor.yaml"), ("corral-node", "node", "node.yaml")):
        service = _unit(units / f"{name}.service")["Service"]
        assert service["ExecStart"] == [f"/opt/c/venv/bin/corral {role} --config /etc/c/{config}"]
        validate = {"serve": "validate /etc/c/corral.yaml"}.get(role, f"{role} --config /etc/c/{config} --validate")
        assert service["ExecStartPre"] == [f"/opt/c/venv/bin/corral {validate}"]
        assert service["User"] == ["svc"] and service["Group"] == ["svc"]
        assert service["EnvironmentFile"] == ["-/etc/c/corral.env"]
        assert "CORRAL_DATA_DIR=/data/c" in service["Environment"]
        assert service["Restart"] == ["on-failure"]
        assert service["NoNewPrivileges"] == ["yes"]
        assert service["ProtectSystem"] == ["strict"]
        assert service["CapabilityBoundingSet"] == [""]  # no capabilities: all ports are > 1024
        assert service["ReadWritePaths"][0].split()[:2] == ["/data/c", "/logs/c"]
        assert _unit(units / f"{name}.service")["Install"]["WantedBy"] == ["multi-user.target"]


def test_writable_paths_and_ports_come_from_each_config(units: Path) -> None:
    serve = (units / "corral.service").read_text()
    assert "ReadWritePaths=/data/c /logs/c -/srv/corral-db\n" in serve  # the SQLite file's directory
    assert "(listens on 9191)" in serve
    assert "TimeoutStopSec=30s" in serve  # shutdown_timeout 20 + 10
    supervisor = (units / "corral-supervisor.service").read_text()
    assert "ReadWritePaths=/data/c /logs/c -/srv/fleet\n" in supervisor
    assert "(listens on 9420, 9421)" in supervisor
    node = _unit(units / "corral-node.service")["Service"]
    assert node["ReadWritePaths"] == ["/data/c /logs/c -/srv/node-state -/home/dev/web"]
    assert node["ProtectHome"] == ["read-only"]  # projects may live under /home


def test_a_privileged_port_gets_only_the_bind_capability(tmp_path: Path, cli: CliRunner) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text("version: 1\nserver:\n  port: 443\n")
    text = invoke(cli, "generate", "systemd", "--config", str(config))
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\nAmbientCapabilities=CAP_NET_BIND_SERVICE" in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_units(sample_config: Path, fleet_configs: tuple[Path, Path],
                                            cli: CliRunner, tmp_path: Path) -> None:
    prefix = tmp_path / "opt"
    (prefix / "venv" / "bin").mkdir(parents=True)
    executable = prefix / "venv" / "bin" / "corral"
    executable.write_text("#!/bin/sh\nexit 0\n")
    executable.chmod(executable.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "units"
    supervisor, node = fleet_configs
    invoke(cli, "generate", "systemd", "--role", "all", "--config", str(sample_config), "--out", str(out),
           "--supervisor-config", str(supervisor), "--node-config", str(node), "--prefix", str(prefix))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *sorted(map(str, out.iterdir()))],
                            capture_output=True, text=True, timeout=60, check=False,
                            env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""  # an unknown or misspelt key would be reported here


def test_env_template_names_variables_without_values(sample_config: Path, cli: CliRunner,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-do-not-copy")
    text = invoke(cli, "generate", "env", "--config", str(sample_config), "--role", "all")
    assert text.splitlines()[1:] == ["#OPENAI_API_KEY=", "#LOCAL_KEY=", "#CORRAL_MASTER_KEY=", "#CORRAL_FLEET_TOKEN="]
    assert "sk-do-not-copy" not in text


def test_launchd_plists_run_each_role_with_its_config(sample_config: Path, cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "agents"
    invoke(cli, "generate", "launchd", "--role", "serve", "--role", "node", "--config", str(sample_config),
           "--out", str(out), "--executable", "/usr/local/bin/corral", "--data-dir", str(tmp_path / "data"),
           "--log-dir", str(tmp_path / "logs"))
    assert sorted(p.name for p in out.iterdir()) == ["dev.corral.node.plist", "dev.corral.serve.plist"]
    serve = plistlib.loads((out / "dev.corral.serve.plist").read_bytes())
    config_dir = sample_config.parent.resolve()
    assert serve["ProgramArguments"] == ["/usr/local/bin/corral", "serve", "--config", f"{config_dir}/corral.yaml"]
    assert serve["EnvironmentVariables"] == {"CORRAL_DATA_DIR": str((tmp_path / "data").resolve())}
    assert serve["KeepAlive"] == {"SuccessfulExit": False, "Crashed": True}
    assert serve["StandardErrorPath"] == f"{(tmp_path / 'logs').resolve()}/serve.err.log"
    node = plistlib.loads((out / "dev.corral.node.plist").read_bytes())
    assert node["ProgramArguments"][1:] == ["node", "--config", f"{config_dir}/node.yaml"]


def test_role_templates_are_valid_configs(cli: CliRunner) -> None:
    load_fleet_config(template_path("supervisor"), SupervisorConfig)
    node = load_fleet_config(template_path("node"), NodeConfig)
    assert node.supervisor_url.endswith(":8420")
    assert invoke(cli, "generate", "template", "supervisor") == template_path("supervisor").read_text()


def test_shipped_units_match_the_generator(tmp_path: Path, cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "CORRAL_DATABASE_URL", "CORRAL_REDIS_URL", "CORRAL_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "units"
    invoke(cli, "generate", "systemd", "--role", "all", "--out", str(out))
    shipped = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
    assert sorted(p.name for p in shipped.iterdir()) == sorted(p.name for p in out.iterdir())
    for unit in out.iterdir():
        assert (shipped / unit.name).read_text() == unit.read_text(), f"deploy/systemd/{unit.name} is stale"
