"""Real `corral supervisor` and `corral node` processes over loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from corral.cli.main import build_app
from corral.fleet.testing import FleetProcess, free_port, start_node, start_supervisor

TOKEN = "e2e-fleet-token-0123456789"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "fleet"

SUPERVISOR_YAML = """\
version: 1
server: {heartbeat_interval_seconds: 0.3, heartbeat_missed_count: 3}
database_url: sqlite:///DB
event_flush_ms: 5
"""

NODE_YAML = """\
version: 1
heartbeat_interval_seconds: 0.3
backoff_max_seconds: 0.5
state_dir: STATE
backends:
  scripted:
    type: native
    model: scripted
    provider: {type: scripted, script: [{text: "step", delay: 0.02}]}
projects:
  - {name: demo, directory: DIR, backend: scripted}
"""


@pytest.fixture
def procs() -> Iterator[list[FleetProcess]]:
    started: list[FleetProcess] = []
    yield started
    for p in started:
        if p.proc.poll() is None:
            p.kill()


class Api:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.headers = {"Authorization": f"Bearer {TOKEN}"}

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(self.base + path, params=params, headers=self.headers, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    def command(self, kind: str, target: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(self.base + "/api/v1/commands", headers=self.headers, timeout=30,
                              json={"type": kind, "target": target, "args": args})
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data


def wait_for(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


def _configs(tmp_path: Path) -> tuple[Path, Path]:
    sup = tmp_path / "supervisor.yaml"
    sup.write_text(SUPERVISOR_YAML.replace("DB", str(tmp_path / "fleet.db")))
    node = tmp_path / "node.yaml"
    node.write_text(NODE_YAML.replace("STATE", str(tmp_path / "state")).replace("DIR", str(tmp_path / "demo")))
    return sup, node


def test_kill_9_supervisor_while_nodes_stream_every_event_stored_exactly_once(
        tmp_path: Path, procs: list[FleetProcess]) -> None:
    sup_cfg, node_cfg = _configs(tmp_path)
    ws, http = free_port(), free_port()
    sup = start_supervisor(sup_cfg, port=ws, http_port=http, token=TOKEN)
    procs.append(sup)
    names = ["n1", "n2", "n3"]
    for name in names:
        procs.append(start_node(node_cfg, supervisor_url=f"ws://127.0.0.1:{ws}", node_id=name, token=TOKEN))
    api = Api(http)
    wait_for(lambda: len(api.get("/api/v1/nodes", status="online")) == 3, 60, "three nodes online")
    prompts = [f"p{i}" for i in range(30)]
    for name in names:
        assert api.command("start", {"node_id": name}, {"project": "demo", "prompts": prompts})["status"] == "success"
    time.sleep(0.4)  # mid-stream
    sup.kill()
    time.sleep(0.5)  # nodes keep producing into their outboxes
    sup = start_supervisor(sup_cfg, port=ws, http_port=http, token=TOKEN, log=tmp_path / "supervisor-2.log")
    procs.append(sup)
    expected = 1 + 4 * len(prompts)

    def complete() -> bool:
        return all(len(api.get("/api/v1/events", node_id=n, limit=1000)) >= expected for n in names)

    wait_for(complete, 30, "every node's events stored")
    time.sleep(0.3)  # any late duplicate would land now
    for name in names:
        events = api.get("/api/v1/events", node_id=name, limit=1000)
        assert sorted(e["seq"] for e in events) == list(range(1, expected + 1)), name
        session = api.get("/api/v1/sessions", node_id=name)[0]
        usage = [e for e in events if e["type"] == "usage"]
        assert session["input_tokens"] == sum(e["input_tokens"] for e in usage)  # counted once
        assert session["state"] == "idle"
    metrics = httpx.get(f"http://127.0.0.1:{http}/metrics", timeout=5).text
    assert 'corral_fleet_nodes{status="online"} 3.0' in metrics


def test_stopped_node_goes_offline_sessions_unreachable_then_back(tmp_path: Path, procs: list[FleetProcess]) -> None:
    sup_cfg, node_cfg = _configs(tmp_path)
    ws, http = free_port(), free_port()
    procs.append(start_supervisor(sup_cfg, port=ws, http_port=http, token=TOKEN))
    url = f"ws://127.0.0.1:{ws}"
    node = start_node(node_cfg, supervisor_url=url, node_id="worker", token=TOKEN)
    procs.append(node)
    api = Api(http)
    wait_for(lambda: len(api.get("/api/v1/nodes", status="online")) == 1, 60, "node online")
    sid = api.command("start", {"project": "demo"}, {"project": "demo", "prompt": "hi", "wait": True})[
        "output"]["session_id"]
    assert node.stop() == 0
    wait_for(lambda: api.get("/api/v1/nodes/worker")["status"] == "offline", 10, "node offline")
    offline = api.get("/api/v1/events", node_id="supervisor", type="node.offline")
    assert offline[0]["data"]["silent_seconds"] > 0.9  # 0.3 s x 3 missed heartbeats, not before
    assert offline[0]["data"]["sessions_unreachable"] == [sid]
    assert api.get(f"/api/v1/sessions/{sid}")["state"] == "unreachable"
    procs.append(start_node(node_cfg, supervisor_url=url, node_id="worker", token=TOKEN,
                            log=tmp_path / "node-worker-2.log"))
    wait_for(lambda: api.get(f"/api/v1/sessions/{sid}")["state"] == "idle", 20, "session back")
    assert api.get("/api/v1/nodes/worker")["status"] == "online"
    replied = api.command("prompt", {"session_id": sid}, {"message": "still there?", "wait": True})
    assert replied["output"]["reply"] == "step"


def test_examples_work_as_they_are_and_ctl_drives_them(tmp_path: Path, procs: list[FleetProcess],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ws, http = free_port(), free_port()
    env = {"CORRAL_FLEET_TOKEN": TOKEN, "CORRAL_FLEET_SUPERVISOR": f"ws://127.0.0.1:{ws}", "CORRAL_NODE_ID": "ex"}
    procs.append(start_supervisor(EXAMPLES / "supervisor.yaml", port=ws, http_port=http, token=TOKEN, env=env,
                                  cwd=tmp_path))
    procs.append(start_node(EXAMPLES / "node.yaml", supervisor_url=env["CORRAL_FLEET_SUPERVISOR"], node_id="ex",
                            token=TOKEN, env=env, cwd=tmp_path))
    monkeypatch.setenv("CORRAL_FLEET_TOKEN", TOKEN)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    runner = CliRunner()
    app = build_app()
    base = ["ctl", "--supervisor-url", f"http://127.0.0.1:{http}"]

    def ctl(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, [*base, *args])
        assert result.exit_code == code, result.output
        return result.output

    wait_for(lambda: "online" in ctl("nodes", "list"), 60, "node listed online")
    import json

    nodes = json.loads(ctl("--format", "json", "nodes", "list"))
    assert [(n["node_id"], n["projects"]) for n in nodes] == [("ex", ["demo"])]
    out = json.loads(ctl("--format", "json", "sessions", "start", "--project", "demo", "--prompt", "go", "--wait"))
    sid = out["output"]["session_id"]
    assert out["output"]["reply"] == "Plan: read the code, write the tests, make them pass."
    prompt = json.loads(ctl("--format", "json", "sessions", "prompt", sid, "and then?", "--wait"))
    assert prompt["output"]["reply"] == "You said: and then?"
    wait_for(lambda: "usage" in ctl("events", "tail", "--session", sid), 5, "events")
    table = ctl("sessions", "list")
    assert table.splitlines()[0].split()[:4] == ["SESSION_ID", "NODE_ID", "PROJECT", "STATE"] and sid in table
    assert "today: 0.000000 USD" in ctl("cost", "today")
    json.loads(ctl("--format", "json", "cost", "month"))
    killed = json.loads(ctl("--format", "json", "sessions", "kill", sid))
    assert killed["status"] == "success"
    assert "command.kill" in ctl("audit", "list")
    missing = runner.invoke(app, [*base, "sessions", "kill", "nope"])
    assert missing.exit_code == 1 and "unknown_session" in missing.output


def test_ctl_and_node_report_wrong_token_and_unreachable_supervisor(tmp_path: Path, procs: list[FleetProcess],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    sup_cfg, node_cfg = _configs(tmp_path)
    ws, http = free_port(), free_port()
    procs.append(start_supervisor(sup_cfg, port=ws, http_port=http, token=TOKEN))
    node = start_node(node_cfg, supervisor_url=f"ws://127.0.0.1:{ws}", node_id="bad", token="not-the-token-000000")
    procs.append(node)
    monkeypatch.delenv("CORRAL_FLEET_TOKEN", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    runner = CliRunner()
    app = build_app()
    wrong = runner.invoke(app, ["ctl", "--supervisor-url", f"http://127.0.0.1:{http}", "--token", "nope",
                                "nodes", "list"])
    assert wrong.exit_code == 1 and "rejected the token (HTTP 401)" in wrong.output
    dead = free_port()
    gone = runner.invoke(app, ["ctl", "--supervisor-url", f"http://127.0.0.1:{dead}", "nodes", "list"])
    assert gone.exit_code == 1 and f"cannot reach the supervisor at http://127.0.0.1:{dead}" in gone.output
    ws_url = runner.invoke(app, ["ctl", "--supervisor-url", f"ws://127.0.0.1:{ws}", "nodes", "list"])
    assert ws_url.exit_code == 1 and "ctl talks to the HTTP API" in ws_url.output
    # the token can live in the user config file
    (tmp_path / "config" / "corral").mkdir(parents=True)
    (tmp_path / "config" / "corral" / "ctl.json").write_text(
        f'{{"supervisor_url": "http://127.0.0.1:{http}", "token": "{TOKEN}"}}')
    assert runner.invoke(app, ["ctl", "nodes", "list"]).exit_code == 0
    wait_for(lambda: "HTTP 401 (wrong token?)" in node.output(), 10, "the node's error")
    assert node.proc.poll() is None  # it keeps retrying with backoff
    assert Api(http).get("/api/v1/nodes") == []
    assert node.stop() == 0 and procs[0].stop() == 0  # SIGTERM: clean shutdown, exit status 0
