"""Live reload of supervisor.yaml: SIGHUP on a real `corral supervisor` process with a real
`corral node` connected, and `--watch` on an in-process supervisor."""

from __future__ import annotations

import hashlib
import hmac
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from corral.config.fleet import SupervisorConfig, load_fleet_config
from corral.fleet.supervisor.app import Supervisor
from corral.fleet.testing import FleetProcess, free_port, start_node, start_supervisor, wait_until

TOKEN = "reload-fleet-token-0123456789"
SECRET = "slack-signing-secret-for-reload"

BASE = """\
version: 1
server: {heartbeat_interval_seconds: 0.3, heartbeat_missed_count: 3}
database_url: sqlite:///DB
event_flush_ms: 5
chatops:
  slack: {signing_secret: SECRET}
  roles:
    operator: {slack_users: [OPERATORS]}
"""

NODE_YAML = """\
version: 1
heartbeat_interval_seconds: 0.3
state_dir: STATE
backends:
  scripted: {type: native, model: scripted, provider: {type: scripted}}
projects:
  - {name: demo, directory: DIR, backend: scripted}
"""


@pytest.fixture
def procs() -> Iterator[list[FleetProcess]]:
    started: list[FleetProcess] = []
    yield started
    for p in started:
        p.stop(5)


def _write(path: Path, db: Path, operators: str, extra: str = "") -> None:
    path.write_text(BASE.replace("DB", str(db)).replace("SECRET", SECRET).replace("OPERATORS", operators) + extra)


def _slack_status(http: int, user: str) -> dict[str, Any]:
    body = urlencode({"user_id": user, "user_name": "ops", "command": "/corral", "text": "status",
                      "trigger_id": str(time.monotonic_ns())}).encode()
    stamp = str(int(time.time()))
    signature = "v0=" + hmac.new(SECRET.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    response = httpx.post(f"http://127.0.0.1:{http}/chatops/slack", content=body, timeout=5, headers={
        "x-slack-request-timestamp": stamp, "x-slack-signature": signature})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _metrics(http: int) -> str:
    return httpx.get(f"http://127.0.0.1:{http}/metrics", timeout=5).text


def _wait(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


def test_sighup_applies_a_valid_config_keeps_nodes_and_rejects_a_broken_one(
        tmp_path: Path, procs: list[FleetProcess]) -> None:
    config, db = tmp_path / "supervisor.yaml", tmp_path / "fleet.db"
    _write(config, db, "U0FIRST")
    node_yaml = tmp_path / "node.yaml"
    node_yaml.write_text(NODE_YAML.replace("STATE", str(tmp_path / "state")).replace("DIR", str(tmp_path / "demo")))
    ws, http = free_port(), free_port()
    sup = start_supervisor(config, port=ws, http_port=http, token=TOKEN, env={"LOG_LEVEL": "info"})
    procs.append(sup)
    procs.append(start_node(node_yaml, supervisor_url=f"ws://127.0.0.1:{ws}", node_id="n1", token=TOKEN))
    with httpx.Client(base_url=f"http://127.0.0.1:{http}", headers={"Authorization": f"Bearer {TOKEN}"},
                      timeout=5) as api:
        _sighup_scenario(config, db, sup, api, http)


def _sighup_scenario(config: Path, db: Path, sup: FleetProcess, api: httpx.Client, http: int) -> None:

    def node() -> dict[str, Any]:
        data: dict[str, Any] = api.get("/api/v1/nodes/n1").json().get("data") or {}
        return data

    _wait(lambda: node().get("status") == "online", 30, "node online")
    connected_at = node()["connected_at"]
    assert _slack_status(http, "U0SECOND")["text"].startswith("Not allowed")
    first_hash = hashlib.sha256(config.read_bytes()).hexdigest()[:16]
    assert f'corral_fleet_config_info{{hash="{first_hash}"}} 1.0' in _metrics(http)

    # valid: a new operator and a new fleet token apply live; a heartbeat change needs a restart
    _write(config, db, "U0SECOND", extra="auth: {token: rotated-token-0123456789}\n")
    config.write_text(config.read_text().replace("heartbeat_interval_seconds: 0.3", "heartbeat_interval_seconds: 0.5"))
    sup.proc.send_signal(signal.SIGHUP)
    _wait(lambda: 'corral_fleet_config_reloads_total{result="success"} 1.0' in _metrics(http), 10, "reload")
    second_hash = hashlib.sha256(config.read_bytes()).hexdigest()[:16]
    metrics = _metrics(http)
    assert f'corral_fleet_config_info{{hash="{second_hash}"}} 1.0' in metrics and first_hash not in metrics
    assert _slack_status(http, "U0SECOND")["text"] == "Fleet status"
    assert _slack_status(http, "U0FIRST")["text"].startswith("Not allowed")
    rotated = httpx.get(f"http://127.0.0.1:{http}/api/v1/nodes", timeout=5,
                        headers={"Authorization": "Bearer rotated-token-0123456789"})
    assert rotated.status_code == 200 and api.get("/api/v1/nodes").status_code == 200  # old one in its overlap
    assert node()["status"] == "online" and node()["connected_at"] == connected_at  # the node never reconnected
    _wait(lambda: "needs a restart to take effect: server.heartbeat_interval_seconds (0.3 -> 0.5)" in sup.output(),
          5, "the restart-only change named in the log")
    audit = api.get("/api/v1/audit", params={"action": "config.reload"}).json()["data"]
    assert audit[0]["args"]["changed"] == ["auth", "chatops"]
    assert audit[0]["args"]["needs_restart"] == ["server.heartbeat_interval_seconds"]

    # invalid: the running config keeps serving; the error names file:line key
    config.write_text(config.read_text() + "policies: {resume_on_idel: {enabled: true}}\n")
    sup.proc.send_signal(signal.SIGHUP)
    _wait(lambda: 'corral_fleet_config_reloads_total{result="failure"} 1.0' in _metrics(http), 10, "rejected reload")
    line = config.read_text().splitlines().index("policies: {resume_on_idel: {enabled: true}}") + 1
    expected = f"{config}:{line} policies.resume_on_idel: unknown key 'resume_on_idel' (did you mean 'resume_on_idle'?)"
    _wait(lambda: expected in sup.output(), 5, "the error in the log")
    ready = httpx.get(f"http://127.0.0.1:{http}/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["config"]["last_reload_error"] == expected
    metrics = _metrics(http)
    assert "corral_fleet_config_reload_failing 1.0" in metrics
    assert f'corral_fleet_config_info{{hash="{second_hash}"}} 1.0' in metrics  # still the running one
    assert _slack_status(http, "U0SECOND")["text"] == "Fleet status"
    assert node()["connected_at"] == connected_at
    assert SECRET not in sup.output() and "rotated-token-0123456789" not in sup.output()
    assert sup.stop() == 0


async def test_watch_reloads_on_file_change_and_applies_policies_and_alerts(tmp_path: Path) -> None:
    config, db = tmp_path / "supervisor.yaml", tmp_path / "fleet.db"
    _write(config, db, "U0FIRST")
    config.write_text(config.read_text().replace("heartbeat_missed_count: 3}", "heartbeat_missed_count: 3, port: 0, "
                                                                               "http_port: 0}"))
    sup = Supervisor(load_fleet_config(config, SupervisorConfig), TOKEN, config_path=config, watch_interval=0.05)
    await sup.start()
    try:
        assert sup.policies.config.resume_on_idle.enabled is False and sup.alerter.routes == []
        config.write_text(config.read_text() + (
            "policies: {check_interval_seconds: 5, resume_on_idle: {enabled: true, max_retries: 7}}\n"
            "alerts: [{name: ops, kind: webhook, url: 'http://127.0.0.1:9/hook', events: [node.offline]}]\n"))
        await wait_until(lambda: sum(sup.reloads.values()) == 1, 5, "the watcher's reload")
        assert sup.reload_error is None and sup.reloads["success"] == 1
        assert sup.policies.config.resume_on_idle.max_retries == 7 and sup.policies.config.check_interval_seconds == 5
        assert [r.config.name for r in sup.alerter.routes] == ["ops"] and sup.alerter.wants("node.offline")
        assert sup.config_hash == hashlib.sha256(config.read_bytes()).hexdigest()[:16]
        kept = sup.alerter.routes[0]
        config.write_text(config.read_text().replace("max_retries: 7", "max_retries: 8"))
        await wait_until(lambda: sup.reloads["success"] == 2, 5, "the second reload")
        assert sup.alerter.routes[0] is kept  # an unchanged route keeps its queue and counters
    finally:
        await sup.stop()
