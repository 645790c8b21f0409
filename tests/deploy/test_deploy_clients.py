"""`corral generate opencode|crush`: configs that point at the server's real URL, list
its models and agents with their limits, and take the key from CORRAL_API_KEY. The
OpenCode config is loaded by the real `opencode` (npm `opencode-ai`), offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from .conftest import invoke

OPENCODE_PACKAGE = "opencode-ai@^1.18"


def _json(text: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(text)
    return data


def test_opencode_config_points_at_the_configured_port(sample_config: Path, cli: CliRunner) -> None:
    data = _json(invoke(cli, "generate", "opencode", "--config", str(sample_config)))
    provider = data["provider"]["corral"]
    assert provider["npm"] == "@ai-sdk/openai-compatible"
    assert provider["options"] == {"baseURL": "http://127.0.0.1:9191/v1", "apiKey": "{env:CORRAL_API_KEY}"}
    models = provider["models"]
    assert list(models) == ["fast", "local", "assistant"]  # no embedding model, no internal agent
    assert models["fast"]["limit"] == {"context": 64000, "output": 16384}
    assert models["fast"]["cost"] == {"input": 0.15, "output": 0.6}
    assert models["local"]["limit"] == {"context": 128000, "output": 8192}  # the documented defaults
    assert models["assistant"]["limit"] == {"context": 64000, "output": 16384}  # its model's limits
    assert data["model"] == "corral/assistant"


def test_url_flag_and_tls_change_only_the_base_url(sample_config: Path, cli: CliRunner, tmp_path: Path) -> None:
    data = _json(invoke(cli, "generate", "opencode", "--config", str(sample_config), "--url",
                        "https://corral.example.com/"))
    assert data["provider"]["corral"]["options"]["baseURL"] == "https://corral.example.com/v1"
    tls = tmp_path / "tls.yaml"
    tls.write_text("version: 1\nproviders: {s: {type: scripted}}\nmodels: {m: {provider: s, model: x}}\n"
                   "server: {host: corral.lan, port: 8443, tls: {cert_file: /c.pem, key_file: /k.pem}}\n")
    crush = _json(invoke(cli, "generate", "crush", "--config", str(tls)))
    assert crush["providers"]["corral"]["base_url"] == "https://corral.lan:8443/v1"


def test_crush_config_has_every_field_crush_requires(sample_config: Path, cli: CliRunner) -> None:
    data = _json(invoke(cli, "generate", "crush", "--config", str(sample_config)))
    provider = data["providers"]["corral"]
    assert provider["type"] == "openai"
    assert provider["base_url"] == "http://127.0.0.1:9191/v1"
    assert provider["api_key"] == "$CORRAL_API_KEY"
    required = {"id", "name", "cost_per_1m_in", "cost_per_1m_out", "cost_per_1m_in_cached",
                "cost_per_1m_out_cached", "context_window", "default_max_tokens", "can_reason",
                "supports_attachments"}
    fast = provider["models"][0]
    assert required <= set(fast)
    assert (fast["id"], fast["context_window"], fast["default_max_tokens"]) == ("fast", 64000, 16384)
    assert (fast["cost_per_1m_in"], fast["cost_per_1m_in_cached"]) == (0.15, 0.075)
    assert [m["id"] for m in provider["models"]] == ["fast", "local", "assistant"]
    assert data["models"]["large"] == {"model": "assistant", "provider": "corral"}


def test_a_config_without_models_is_refused(tmp_path: Path, cli: CliRunner) -> None:
    from corral.cli.main import build_app

    empty = tmp_path / "empty.yaml"
    empty.write_text("version: 1\n")
    result = cli.invoke(build_app(), ["generate", "crush", "--config", str(empty)])
    assert result.exit_code == 1
    assert "serves no models" in result.output


# ---- the real opencode -----------------------------------------------------------


def _npm_unavailable(reason: str) -> None:
    if os.environ.get("CORRAL_REQUIRE_SERVICES") == "1":
        pytest.fail(f"CORRAL_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def opencode_bin() -> Path:
    """`opencode` from the npm registry, installed once into a cache dir."""
    npm = shutil.which("npm")
    if npm is None:
        _npm_unavailable("npm is not installed (needed for the opencode-ai package)")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "corral-tests" / "opencode-ai"
    binary = cache / "node_modules" / ".bin" / "opencode"
    if not binary.exists():
        staging = cache.with_name(f"opencode-ai.{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        result = subprocess.run([str(npm), "install", "--no-audit", "--no-fund", "--prefix", str(staging),
                                 OPENCODE_PACKAGE], capture_output=True, text=True, timeout=300, check=False)
        if result.returncode != 0:
            _npm_unavailable(f"npm install {OPENCODE_PACKAGE} failed: {result.stderr[-500:]}")
        shutil.rmtree(cache, ignore_errors=True)
        staging.replace(cache)
    return binary


def _opencode_env(home: Path, config: Path, key: str = "") -> dict[str, str]:
    # A HOME beside the install, shared by runs: what opencode fetches on first use (the
    # provider's npm package) is fetched once; OPENCODE_CONFIG keeps each test's config apart.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCODE", "XDG_"))}
    return env | {
        "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_CACHE_HOME": str(home / ".cache"), "XDG_STATE_HOME": str(home / ".local/state"),
        "OPENCODE_CONFIG": str(config),
        # Offline: the models.dev catalogue is not fetched; custom providers need none of it.
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "CORRAL_API_KEY": key,
    }


def _models(stdout: str) -> dict[str, dict[str, Any]]:
    """`opencode models --verbose`: a `provider/model` line, then that model as JSON."""
    found: dict[str, dict[str, Any]] = {}
    decoder = json.JSONDecoder()
    text = stdout
    while text.strip():
        name, _, text = text.strip().partition("\n")
        detail, end = decoder.raw_decode(text.lstrip())
        found[name.strip()] = detail
        text = text.lstrip()[end:]
    return found


@pytest.mark.npx
def test_real_opencode_loads_the_config_and_lists_corral_models(
    sample_config: Path, cli: CliRunner, tmp_path: Path, opencode_bin: Path
) -> None:
    config = tmp_path / "opencode.json"
    invoke(cli, "generate", "opencode", "--config", str(sample_config), "--out", str(config))
    result = subprocess.run([str(opencode_bin), "models", "corral", "--verbose", "--pure"], cwd=tmp_path,
                            env=_opencode_env(opencode_bin.parents[2] / "home", config), capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    models = _models(result.stdout)
    assert sorted(models) == ["corral/assistant", "corral/fast", "corral/local"]
    assert models["corral/fast"]["limit"] == {"context": 64000, "output": 16384}
    assert models["corral/assistant"]["name"] == "General helper"
    assert models["corral/fast"]["cost"]["input"] == 0.15


@pytest.mark.npx
@pytest.mark.slow
def test_real_opencode_gets_an_answer_from_corral(
    scripted_server: tuple[Path, str], cli: CliRunner, tmp_path: Path, opencode_bin: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server_config, key = scripted_server
    config = tmp_path / "opencode.json"
    monkeypatch.setenv("TEST_MASTER_KEY", key)
    invoke(cli, "generate", "opencode", "--config", str(server_config), "--out", str(config))
    result = subprocess.run(
        [str(opencode_bin), "run", "--pure", "-m", "corral/helper", "ping from opencode"], cwd=tmp_path,
        env=_opencode_env(opencode_bin.parents[2] / "home", config, key=key), capture_output=True, text=True, timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # The key mattered: the server refuses the same request without it.
    base = json.loads(config.read_text())["provider"]["corral"]["options"]["baseURL"]
    keyless = httpx.post(f"{base}/chat/completions", json={"model": "helper", "messages": [
        {"role": "user", "content": "hi"}]}, timeout=10)
    assert keyless.status_code == 401
    # The scripted model echoes the user's message: the request went through Corral.
    assert "You said:" in result.stdout and "ping from opencode" in result.stdout
