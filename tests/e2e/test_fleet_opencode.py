"""The OpenCode backend with the real `opencode` (npm `opencode-ai`), pointed at a real
`corral serve` running the scripted model, driven through a real supervisor and node."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from corral.fleet.testing import FleetProcess, free_port, start_node, start_supervisor
from corral.testing.process import start_serve

TOKEN = "opencode-fleet-token-0123456789"
CACHE = Path(os.environ.get("CORRAL_TEST_NPM_CACHE", Path(tempfile.gettempdir()) / "corral-test-npm"))


def _runs(binary: Path) -> bool:
    try:
        return subprocess.run([str(binary), "--version"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def opencode_bin() -> Path:
    """`opencode-ai` from the npm registry, installed once into a cache dir. npm may skip the
    package's postinstall (which only links the platform binary), so the binary is taken from
    the platform package directly."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    modules = CACHE / "node_modules"
    if not (modules / "opencode-ai").is_dir():
        CACHE.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["npm", "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", "opencode-ai"],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            pytest.skip(f"npm install opencode-ai failed: {proc.stderr[-500:]}")
    for candidate in sorted(modules.glob("opencode-*/bin/opencode")):
        if candidate.parent.parent.name != "opencode-ai" and _runs(candidate):
            return candidate
    pytest.skip("no runnable opencode binary for this platform in opencode-ai's packages")


@pytest.fixture
def procs() -> Iterator[list[FleetProcess]]:
    started: list[FleetProcess] = []
    yield started
    for p in started:
        if p.proc.poll() is None:
            p.stop(timeout=20)


@pytest.mark.npx
@pytest.mark.slow
def test_opencode_backend_runs_sessions_through_opencode_serve(opencode_bin: Path, tmp_path: Path,
                                                              procs: list[FleetProcess]) -> None:
    serve_cfg = tmp_path / "corral.yaml"
    serve_cfg.write_text("version: 1\nproviders:\n  script: {type: scripted}\n"
                         "models:\n  scripted: {provider: script, model: scripted}\n")
    serve = start_serve(serve_cfg, ready_timeout=60)
    try:
        opencode_config = {"provider": {"corral": {
            "npm": "@ai-sdk/openai-compatible", "name": "Corral",
            "options": {"baseURL": f"{serve.base_url}/v1", "apiKey": "unused"},
            "models": {"scripted": {"name": "scripted"}}}}, "model": "corral/scripted"}
        node_cfg = tmp_path / "node.yaml"
        node_cfg.write_text(json.dumps({
            "heartbeat_interval_seconds": 1, "state_dir": str(tmp_path / "state"),
            "backends": {"oc": {"type": "opencode", "command": [str(opencode_bin)], "model": "corral/scripted",
                                "config": opencode_config, "startup_timeout_seconds": 90,
                                # npm packages opencode installs for providers are cached between runs
                                "env": {"HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(CACHE / "xdg-cache")}}},
            "projects": [{"name": "app", "directory": str(tmp_path / "app"), "backend": "oc"}]}))
        sup_cfg = tmp_path / "supervisor.yaml"
        sup_cfg.write_text(f"database_url: sqlite:///{tmp_path / 'fleet.db'}\n")
        ws, http = free_port(), free_port()
        procs.append(start_supervisor(sup_cfg, port=ws, http_port=http, token=TOKEN))
        procs.append(start_node(node_cfg, supervisor_url=f"ws://127.0.0.1:{ws}", node_id="oc-node", token=TOKEN))
        api = httpx.Client(base_url=f"http://127.0.0.1:{http}", headers={"Authorization": f"Bearer {TOKEN}"},
                           timeout=200)
        deadline = time.monotonic() + 120
        while not api.get("/api/v1/nodes", params={"status": "online"}).json()["data"]:
            assert time.monotonic() < deadline, procs[-1].output()[-2000:]
            time.sleep(0.5)

        def command(kind: str, target: dict[str, str], args: dict[str, object]) -> dict[str, object]:
            body = {"type": kind, "target": target, "args": args, "timeout": 180}
            row: dict[str, object] = api.post("/api/v1/commands", json=body).json()["data"]
            assert row["status"] == "success", row
            return row

        started = command("start", {"project": "app"}, {"project": "app", "prompt": "hello opencode", "wait": True})
        output = started["output"]
        assert isinstance(output, dict)
        sid = output["session_id"]
        assert output["reply"] == "You said: hello opencode"
        again = command("prompt", {"session_id": sid}, {"message": "second turn", "wait": True})
        assert isinstance(again["output"], dict) and again["output"]["reply"] == "You said: second turn"
        deadline = time.monotonic() + 10
        while len(usage := api.get("/api/v1/events", params={"session_id": sid, "type": "usage"}).json()["data"]) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert {u["model"] for u in usage} == {"corral/scripted"} and all(u["input_tokens"] > 0 for u in usage)
        status = command("status", {"session_id": sid}, {})
        assert isinstance(status["output"], dict) and status["output"]["state"] == "idle"
        command("kill", {"session_id": sid}, {})
        deadline = time.monotonic() + 10
        while api.get(f"/api/v1/sessions/{sid}").json()["data"]["state"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        api.close()
    finally:
        serve.proc.terminate()
        serve.proc.wait(20)
