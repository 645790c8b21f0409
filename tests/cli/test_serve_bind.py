"""`corral serve` never listens beyond loopback with authentication off by accident: it
refuses, naming the fix, unless the open deployment is deliberate."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from pydantic import SecretStr

from corral.config.exposure import auth_enabled, check_bind, is_loopback
from corral.config.schema import AuthConfig, JWTConfig
from corral.testing.process import ServeProcess, start_serve
from corral.testing.server import free_port

CONFIG = """
version: 1
providers:
  script:
    type: scripted
models:
  scripted:
    provider: script
    model: scripted
"""

KEY = "k" * 40


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.5", False), ("corral.example.com", False),
])
def test_only_loopback_addresses_count_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(("auth", "env", "on"), [
    (AuthConfig(), {}, False),
    (AuthConfig(), {"CORRAL_MASTER_KEY": ""}, False),
    (AuthConfig(master_key=SecretStr("")), {}, False),
    (AuthConfig(), {"CORRAL_MASTER_KEY": KEY}, True),
    (AuthConfig(master_key=SecretStr(KEY)), {}, True),
    (AuthConfig(api_keys=[SecretStr(KEY)]), {}, True),
    (AuthConfig(jwt=JWTConfig(jwks_url="https://idp.example/jwks.json")), {}, True),
    (AuthConfig(master_key=SecretStr(KEY), required=False), {}, False),
    (AuthConfig(required=True), {}, True),
])
def test_auth_is_on_by_the_gateways_rule(auth: AuthConfig, env: dict[str, str], on: bool) -> None:
    assert auth_enabled(auth, env) is on


def test_loopback_with_auth_off_starts_silently() -> None:
    check = check_bind(AuthConfig(), {}, "127.0.0.1", 8080)
    assert (check.error, check.notes) == (None, [])


def test_an_empty_master_key_is_reported_not_dropped() -> None:
    check = check_bind(AuthConfig(), {"CORRAL_MASTER_KEY": ""}, "127.0.0.1", 8080)
    assert check.error is None
    assert check.notes == ["CORRAL_MASTER_KEY is set but empty, which counts as unset: authentication is off "
                           "(only this machine can connect to 127.0.0.1:8080)"]


def test_a_wildcard_bind_with_auth_off_is_refused_with_the_fix() -> None:
    check = check_bind(AuthConfig(master_key=SecretStr("")), {"CORRAL_MASTER_KEY": ""}, "0.0.0.0", 8080)
    assert check.error is not None
    assert check.error.startswith("refusing to listen on 0.0.0.0:8080 with authentication off")
    assert "CORRAL_MASTER_KEY is set but empty, which counts as unset." in check.error
    assert "auth.master_key is empty, which counts as unset." in check.error
    assert "set CORRAL_MASTER_KEY (or auth.master_key)" in check.error
    assert "--allow-unauthenticated (or set auth.allow_unauthenticated: true)" in check.error


def test_required_false_is_auth_off_even_with_a_key() -> None:
    check = check_bind(AuthConfig(master_key=SecretStr(KEY), required=False), {}, "0.0.0.0", 8080)
    assert check.error is not None and "remove auth.required: false" in check.error


def test_the_opt_out_starts_open_and_says_so() -> None:
    by_config = check_bind(AuthConfig(allow_unauthenticated=True), {}, "0.0.0.0", 9000)
    by_flag = check_bind(AuthConfig(), {}, "0.0.0.0", 9000, allow_unauthenticated=True)
    assert by_config.error is None and by_flag.error is None
    assert by_config.notes == ["listening on 0.0.0.0:9000 with authentication off "
                               "(auth.allow_unauthenticated: true): anyone who can reach it can call every model"]
    assert "(--allow-unauthenticated)" in by_flag.notes[0]


# ---- the real process ---------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "corral.yaml"
    path.write_text(CONFIG)
    return path


def _stop(server: ServeProcess) -> None:
    server.proc.terminate()
    server.proc.wait(timeout=30)


def _models(server: ServeProcess, key: str) -> list[str]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0) as client:
        return [m.id for m in client.models.list()]


def test_serve_on_all_interfaces_with_auth_off_exits_non_zero_naming_the_fix(config: Path) -> None:
    env = {**os.environ, "CORRAL_MASTER_KEY": ""}  # an unfilled Secret: present, empty
    done = subprocess.run(
        [sys.executable, "-m", "corral", "serve", "--config", str(config), "--host", "0.0.0.0",
         "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1
    assert "refusing to listen on 0.0.0.0:" in done.stderr
    assert "CORRAL_MASTER_KEY is set but empty, which counts as unset." in done.stderr
    assert "--allow-unauthenticated" in done.stderr
    assert "serving on" not in done.stderr


def test_serve_on_all_interfaces_starts_open_with_the_opt_out(config: Path) -> None:
    server = start_serve(config, env={"CORRAL_MASTER_KEY": ""}, extra=["--host", "0.0.0.0", "--allow-unauthenticated"])
    try:
        assert "scripted" in _models(server, "anything")  # no key needed: deliberately open
    finally:
        _stop(server)
    assert "with authentication off (--allow-unauthenticated)" in server.output()


def test_serve_on_all_interfaces_starts_with_a_master_key(config: Path) -> None:
    server = start_serve(config, env={"CORRAL_MASTER_KEY": KEY}, extra=["--host", "0.0.0.0"])
    try:
        assert "scripted" in _models(server, KEY)
        with pytest.raises(openai.AuthenticationError):
            _models(server, "not-the-key")
    finally:
        _stop(server)


def test_the_supervisor_has_no_auth_off_mode_and_names_an_empty_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from corral.cli.main import build_app

    monkeypatch.setenv("CORRAL_FLEET_TOKEN", "")
    result = CliRunner().invoke(build_app(), ["supervisor", "--host", "0.0.0.0", "--validate"])
    assert result.exit_code == 1
    assert "no fleet token (CORRAL_FLEET_TOKEN is set but empty): set auth.token" in result.stderr
