"""Background runs survive `corral serve` being killed: a queued run is picked up by
the next process, and a run that was in flight continues from its checkpoint."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx

from corral.testing.process import ServeProcess, start_serve

CONFIG = """
version: 1
providers:
  script:
    type: scripted
    script:
      - tool_calls: [{{name: current_time, arguments: {{timezone: UTC}}}}]
      - text: "Done after the restart."
        delay: ${{ANSWER_DELAY:-0}}
models:
  scripted:
    provider: script
    model: scripted
database:
  url: sqlite+aiosqlite:///{db}
runs:
  workers: ${{RUN_WORKERS:-1}}
  lease_seconds: 1
  poll_interval: 0.1
agents:
  assistant:
    model: scripted
    tools: [time]
"""


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "corral.yaml"
    config.write_text(CONFIG.format(db=tmp_path / "corral.db"))
    return config


def wait_for(server: ServeProcess, run_id: str, states: set[str], seconds: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = httpx.get(f"{server.base_url}/v1/runs/{run_id}", timeout=5).json()
        if run["state"] in states:
            return dict(run)
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} never reached {states}; last: {run}\n{server.output()}")


def kill(server: ServeProcess) -> None:
    server.proc.kill()
    server.proc.wait(timeout=10)


def test_queued_background_run_completes_after_the_server_is_killed_and_restarted(tmp_path, serve_processes) -> None:
    config = write_config(tmp_path)
    first = start_serve(config, env={"RUN_WORKERS": "0"})  # nobody claims: the run stays queued
    serve_processes.append(first)
    queued = httpx.post(f"{first.base_url}/v1/agents/assistant/runs", timeout=10,
                        json={"input": "what time is it?", "mode": "background", "session_id": "s-restart"}).json()
    assert queued["state"] == "queued"
    kill(first)

    second = start_serve(config)
    serve_processes.append(second)
    done = wait_for(second, queued["id"], {"succeeded", "failed"})
    session = httpx.get(f"{second.base_url}/v1/sessions/s-restart", timeout=5).json()
    assert done["state"] == "succeeded" and done["output"] == "Done after the restart."
    assert [m["role"] for m in session["messages"]] == ["user", "assistant", "tool", "assistant"]


def test_run_in_flight_resumes_from_its_checkpoint_after_a_crash(tmp_path, serve_processes) -> None:
    config = write_config(tmp_path)
    first = start_serve(config, env={"ANSWER_DELAY": "60"})  # the model's second turn hangs
    serve_processes.append(first)
    run = httpx.post(f"{first.base_url}/v1/agents/assistant/runs", timeout=10,
                     json={"input": "time?", "mode": "background", "session_id": "s-crash"}).json()
    assert "id" in run, run
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the tool ran and was checkpointed
        checkpoint = httpx.get(f"{first.base_url}/v1/runs/{run['id']}", timeout=5).json()
        if checkpoint["state"] == "running" and checkpoint["attempts"] == 1:
            time.sleep(0.5)
            break
        time.sleep(0.1)
    kill(first)

    second = start_serve(config)
    serve_processes.append(second)
    done = wait_for(second, run["id"], {"succeeded", "failed"})
    session = httpx.get(f"{second.base_url}/v1/sessions/s-crash", timeout=5).json()
    assert done["state"] == "succeeded" and done["attempts"] == 2
    roles = [m["role"] for m in session["messages"]]
    # The first process's tool call and result were kept; the new process's scripted model
    # starts its script again, so it calls the tool once more before answering.
    assert roles == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert session["messages"][-1]["content"] == "Done after the restart."


def test_foreground_run_of_a_dead_server_is_failed_with_the_reason(tmp_path, serve_processes) -> None:
    config = write_config(tmp_path)
    first = start_serve(config, env={"ANSWER_DELAY": "60"})
    serve_processes.append(first)
    with contextlib.suppress(httpx.ReadTimeout):  # the client gives up; the run stays in flight
        httpx.post(f"{first.base_url}/v1/agents/assistant/runs", json={"input": "t"}, timeout=1.5)
    runs_before = httpx.get(f"{first.base_url}/v1/sessions", timeout=5)
    assert runs_before.status_code == 200
    kill(first)
    second = start_serve(config)
    serve_processes.append(second)
    deadline = time.monotonic() + 20
    row = None
    while time.monotonic() < deadline:
        with sqlite3.connect(tmp_path / "corral.db") as db:
            row = db.execute("SELECT state, error FROM agent_runs").fetchone()
        if row and row[0] == "failed":
            break
        time.sleep(0.1)
    assert row is not None and row[0] == "failed"
    assert row[1].startswith("interrupted: the server stopped")
