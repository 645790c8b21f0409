from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.cli.main import build_app
from corral.config.fleet import FleetConfigError, NodeConfig, SupervisorConfig, load_fleet_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "fleet"


def test_examples_load_with_a_token_from_the_environment() -> None:
    env = {"CORRAL_FLEET_TOKEN": "example-token-0123456789"}
    sup = load_fleet_config(EXAMPLES / "supervisor.yaml", SupervisorConfig, env=env)
    node = load_fleet_config(EXAMPLES / "node.yaml", NodeConfig, env=env)
    assert sup.server.port == 8420 and sup.server.http_port == 8421 and sup.database_url is None
    assert node.backends["scripted"].type == "native" and node.projects[0].backend == "scripted"
    assert node.node_id  # empty CORRAL_NODE_ID falls back to the hostname


def test_errors_name_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "supervisor.yaml"
    path.write_text("version: 1\nserver:\n  port: 8420\n  heartbeat_interval_seconds: -1\n  bogus: 2\n")
    with pytest.raises(FleetConfigError) as caught:
        load_fleet_config(path, SupervisorConfig)
    issues = "\n".join(caught.value.issues)
    assert f"{path}:4: server.heartbeat_interval_seconds" in issues
    assert f"{path}:5: server.bogus: Extra inputs are not permitted" in issues


def test_required_variable_message_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("token: ${NOPE_TOKEN:?set NOPE_TOKEN}\n")
    with pytest.raises(FleetConfigError, match="token: set NOPE_TOKEN"):
        load_fleet_config(path, NodeConfig, env={})


def test_project_with_unknown_backend_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("projects:\n  - {name: a, directory: /tmp, backend: missing}\n")
    with pytest.raises(FleetConfigError, match="unknown backend 'missing'"):
        load_fleet_config(path, NodeConfig)


@pytest.mark.parametrize(("token", "code", "text"), [
    ("long-enough-token-123", 0, "valid"),
    ("short", 1, "at least 16 characters"),
])
def test_supervisor_validate_exits_0_or_1_with_the_errors(token: str, code: int, text: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_FLEET_TOKEN", token)
    result = CliRunner().invoke(build_app(), ["supervisor", "--config", str(EXAMPLES / "supervisor.yaml"),
                                              "--validate"])
    assert result.exit_code == code
    assert text in result.output


def test_node_validate_reports_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "node.yaml"
    bad.write_text("backends: {x: {type: native, model: m}}\n")
    result = CliRunner().invoke(build_app(), ["node", "--config", str(bad), "--token", "t" * 20, "--validate"])
    assert result.exit_code == 1
    assert "exactly one of `url` or `provider`" in result.output
