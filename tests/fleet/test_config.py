from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.cli.main import build_app
from corral.config.errors import ConfigError
from corral.config.fleet import NodeConfig, SupervisorConfig, load_fleet_config

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
    with pytest.raises(ConfigError) as caught:
        load_fleet_config(path, SupervisorConfig)
    issues = str(caught.value)
    assert f"{path}:4 server.heartbeat_interval_seconds: input should be greater than 0 (got -1)" in issues
    assert f"{path}:5 server.bogus: unknown key 'bogus'" in issues


def test_required_variable_message_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("token: ${NOPE_TOKEN:?set NOPE_TOKEN}\n")
    with pytest.raises(ConfigError, match=r"node\.yaml:1 token: NOPE_TOKEN is not set: set NOPE_TOKEN"):
        load_fleet_config(path, NodeConfig, env={})


def test_project_with_unknown_backend_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("projects:\n  - {name: a, directory: /tmp, backend: missing}\n")
    with pytest.raises(ConfigError, match="unknown backend 'missing'"):
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


def test_fleet_config_shares_the_gateway_loader_grammar_dotenv_and_hints(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("FLEET_PORT=9001\nSET_BUT_REAL_WINS=from-dotenv\n")
    path = tmp_path / "supervisor.yaml"
    path.write_text(
        "server:\n"
        "  port: ${FLEET_PORT}\n"                        # from .env beside the file
        "  http_port: ${FLEET_HTTP:-9002}\n"             # default when unset
        "  host: ${UNSET_HOST}\n"                        # whole value unset: the key's default applies
        "database_url: sqlite:///${SET_BUT_REAL_WINS}.db\n"
    )
    cfg = load_fleet_config(path, SupervisorConfig, env={"SET_BUT_REAL_WINS": "real"})
    assert (cfg.server.port, cfg.server.http_port, cfg.server.host) == (9001, 9002, "127.0.0.1")
    assert cfg.database_url == "sqlite:///real.db"

    path.write_text("server:\n  prot: 8420\npolicies:\n  resume_on_idle: {enabled: yes, idle_treshold_seconds: 5}\n")
    with pytest.raises(ConfigError) as caught:
        load_fleet_config(path, SupervisorConfig, env={})
    assert [i.render() for i in caught.value.issues] == [
        f"{path}:2 server.prot: unknown key 'prot' (did you mean 'port'?)",
        f"{path}:4 policies.resume_on_idle.idle_treshold_seconds: unknown key 'idle_treshold_seconds' "
        "(did you mean 'idle_threshold_seconds'?)",
    ]


def test_log_level_comes_from_the_flag_then_log_level_env_then_the_config() -> None:
    from corral.fleet.logconfig import resolve

    assert resolve(None, None, {}, None, None) == ("info", "console")
    assert resolve(None, None, {}, "error", "json") == ("error", "json")
    assert resolve(None, None, {"LOG_LEVEL": "WARN", "LOG_FORMAT": "json"}, "error", None) == ("warning", "json")
    assert resolve("debug", None, {"LOG_LEVEL": "warn"}, "error", None) == ("debug", "console")
    with pytest.raises(ValueError, match="LOG_LEVEL: 'verbose' is not a log level; use one of debug, info"):
        resolve(None, None, {"LOG_LEVEL": "verbose"}, None, None)


@pytest.mark.parametrize("command", ["supervisor", "node"])
def test_a_bad_log_level_in_the_environment_fails_validation(command: str, monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    monkeypatch.setenv("CORRAL_FLEET_TOKEN", "long-enough-token-123")
    monkeypatch.setenv("LOG_LEVEL", "verbose")
    config = EXAMPLES / f"{command}.yaml"
    result = CliRunner().invoke(build_app(), [command, "--config", str(config), "--validate"])
    assert result.exit_code == 1 and "LOG_LEVEL: 'verbose' is not a log level" in result.output
    monkeypatch.setenv("LOG_LEVEL", "warn")
    assert CliRunner().invoke(build_app(), [command, "--config", str(config), "--validate"]).exit_code == 0


def test_secrets_come_from_var_file_like_the_gateway_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "slack-secret"
    secret.write_text("from-a-mounted-file\n")
    path = tmp_path / "supervisor.yaml"
    path.write_text("chatops:\n  slack: {signing_secret: '${SLACK_SIGNING_SECRET}'}\n")
    cfg = load_fleet_config(path, SupervisorConfig, env={"SLACK_SIGNING_SECRET_FILE": str(secret)})
    assert cfg.chatops.slack is not None
    assert cfg.chatops.slack.signing_secret.get_secret_value() == "from-a-mounted-file"
    with pytest.raises(ConfigError, match="both SLACK_SIGNING_SECRET and SLACK_SIGNING_SECRET_FILE are set"):
        load_fleet_config(path, SupervisorConfig, env={"SLACK_SIGNING_SECRET_FILE": str(secret),
                                                       "SLACK_SIGNING_SECRET": "x"})

    token = tmp_path / "token"
    token.write_text("token-from-a-file-0123456789\n")
    monkeypatch.delenv("CORRAL_FLEET_TOKEN", raising=False)
    monkeypatch.setenv("CORRAL_FLEET_TOKEN_FILE", str(token))
    result = CliRunner().invoke(build_app(), ["supervisor", "--config", str(EXAMPLES / "supervisor.yaml"),
                                              "--validate"])
    assert result.exit_code == 0, result.output
