"""`corral logs`, `restart`, `down`, `clean` on real processes `corral up` started, and the
container state `status` shows for compose services (through a fake `docker` on PATH:
there is no Docker engine where the tests run)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from corral.boot.processes import ProcessTable, pid_alive
from corral.cli.main import build_app

APP = "from corral.cli.main import main; main()"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class StackDir:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.port = free_port()
        self.data = tmp_path / "data"
        self.config = tmp_path / "corral.yaml"
        # -u: the server's startup line reaches the log at once; request lines go to stderr.
        self.config.write_text(
            "services:\n"
            "  web:\n"
            "    type: http\n"
            f"    port: {self.port}\n"
            "    backoff: 0.05\n"
            "    start:\n"
            f"      command: [{json.dumps(sys.executable)}, -u, -m, http.server, '{self.port}', --bind, 127.0.0.1]\n"
            f"      cwd: {json.dumps(str(tmp_path))}\n"
        )
        self.env = {"CORRAL_DATA_DIR": str(self.data)}

    def invoke(self, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> tuple[int, str]:
        result = CliRunner().invoke(build_app(), [*args, "-c", str(self.config)], input=input,
                                    env={**self.env, **(env or {})})
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.output

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", APP, *args, "-c", str(self.config)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **self.env})

    @property
    def table(self) -> ProcessTable:
        return ProcessTable(self.data / "run")

    def pid(self) -> int:
        record = self.table.get("web")
        assert record is not None
        return record.pid

    def get(self, path: str = "/") -> int:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", trust_env=False).status_code

    def up_detached(self) -> int:
        code, output = self.invoke("up", "--only-deps", "--detach")
        assert code == 0, output
        return self.pid()


@pytest.fixture
def stack(tmp_path: Path):
    made = StackDir(tmp_path)
    yield made
    for record in made.table.all():  # never leave a server behind
        if pid_alive(record.pid, record.start_ticks):
            os.killpg(record.pid, signal.SIGKILL)


def wait_for(predicate, seconds: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_logs_show_what_the_started_command_wrote(stack: StackDir) -> None:
    stack.up_detached()
    marker = f"/probe-{uuid.uuid4().hex[:8]}"
    assert stack.get(marker) == 404
    assert wait_for(lambda: marker in stack.invoke("logs", "web")[1])
    code, output = stack.invoke("logs", "web", "--lines", "50")
    assert code == 0
    assert f"Serving HTTP on 127.0.0.1 port {stack.port}" in output
    assert f'"GET {marker} HTTP/1.1" 404' in output
    code, output = stack.invoke("logs", "nope")
    assert code == 2 and "no service 'nope' that corral up starts (services it starts: web)" in output


def test_logs_follow_prints_new_lines_until_terminated(stack: StackDir) -> None:
    stack.up_detached()
    assert wait_for(lambda: "Serving HTTP" in (stack.data / "logs" / "web.log").read_text())
    follower = stack.spawn("logs", "web", "--follow", "--lines", "5")
    try:
        assert follower.stdout is not None
        assert "Serving HTTP on 127.0.0.1" in follower.stdout.readline()  # the tail, then it follows
        marker = f"/followed-{uuid.uuid4().hex[:8]}"
        assert stack.get(marker) == 404
        seen = ""
        deadline = time.monotonic() + 15
        while marker not in seen and time.monotonic() < deadline:
            seen += follower.stdout.readline()
        assert f'"GET {marker} HTTP/1.1" 404' in seen
        follower.send_signal(signal.SIGTERM)
        assert follower.wait(timeout=10) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
        if follower.stdout:
            follower.stdout.close()


def test_restart_replaces_the_process_and_waits_until_it_answers(stack: StackDir) -> None:
    first = stack.up_detached()
    code, output = stack.invoke("restart", "web")
    second = stack.pid()
    assert code == 0, output
    assert second != first and not pid_alive(first)
    assert f"web: started (pid {second})" in output
    assert stack.get() == 200
    code, output = stack.invoke("status")
    assert f"pid {second} running" in output


def test_down_stops_detached_commands_and_forgets_them(stack: StackDir) -> None:
    pid = stack.up_detached()
    code, output = stack.invoke("down")
    assert code == 0, output
    assert f"web: stopped (pid {pid})" in output
    assert not pid_alive(pid) and stack.table.all() == []
    with pytest.raises(httpx.ConnectError):
        stack.get()
    assert stack.invoke("down") == (0, "nothing that corral up started is left to act on\n")


def test_down_asks_the_holding_corral_up_to_stop_its_services(stack: StackDir) -> None:
    holder = stack.spawn("up", "--only-deps")
    try:
        assert holder.stdout is not None
        seen = ""
        deadline = time.monotonic() + 20
        while "holding 1 started service" not in seen and time.monotonic() < deadline:
            seen += holder.stdout.readline()
        pid = stack.pid()
        assert stack.get() == 200
        code, output = stack.invoke("down")
        assert code == 0, output
        assert f"corral up (pid {holder.pid}): stopped, with the services it held" in output
        assert holder.wait(timeout=10) == 0
        assert not pid_alive(pid) and stack.table.all() == []
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if holder.stdout:
            holder.stdout.close()


def test_clean_asks_first_then_deletes_logs(stack: StackDir) -> None:
    pid = stack.up_detached()
    log = stack.data / "logs" / "web.log"
    assert wait_for(log.exists)
    code, output = stack.invoke("clean", input="n\n")
    assert code == 1 and "nothing done" in output
    assert f"delete the logs {log}" in output
    assert pid_alive(pid) and log.exists()
    code, output = stack.invoke("clean", "--yes")
    assert code == 0, output
    assert not pid_alive(pid) and not log.exists()
    assert f"web: deleted {log}" in output


# ---- compose services: container state through a fake docker ---------------------

COMPOSE_CONFIG = """\
services:
  cache:
    type: tcp
    port: {port}
    retries: 0
    start:
      compose_service: redis
      compose_file: stack.yml
"""


def fake_docker(tmp_path: Path, script: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    docker = bin_dir / "docker"
    docker.write_text(f"#!{sys.executable}\nimport sys\n{script}\n")
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


UNREACHABLE = """
with open(sys.argv[0] + ".calls", "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
sys.stderr.write("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
                 "Is the docker daemon running?\\n")
sys.exit(1)
"""

RUNNING = """
import json
assert sys.argv[1:6] == ["compose", "-f", "stack.yml", "ps", "--all"], sys.argv
print(json.dumps({"Name": "corral-redis-1", "Service": "redis", "State": "running", "Health": "healthy",
                  "Status": "Up 3 minutes (healthy)", "ExitCode": 0}))
print(json.dumps({"Name": "corral-other-1", "Service": "other", "State": "exited", "Status": "Exited (1)"}))
"""


def test_status_says_the_docker_engine_is_unreachable(tmp_path: Path) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text(COMPOSE_CONFIG.format(port=free_port()))
    env = fake_docker(tmp_path, UNREACHABLE)
    result = CliRunner().invoke(build_app(), ["status", "-c", str(config), "--format", "json"],
                                env={**env, "CORRAL_DATA_DIR": str(tmp_path / "data")})
    service = json.loads(result.output)["services"][0]
    assert service["status"] == "down"
    assert service["container"] == {
        "state": "unreachable", "health": None,
        "detail": "docker engine unreachable: Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
                  "Is the docker daemon running?"}
    table = CliRunner().invoke(build_app(), ["status", "-c", str(config)],
                               env={**env, "CORRAL_DATA_DIR": str(tmp_path / "data")}).output
    assert "runs as" in table and "container unreachable: docker engine unreachable" in table
    down = CliRunner().invoke(build_app(), ["down", "-c", str(config)],
                              env={**env, "CORRAL_DATA_DIR": str(tmp_path / "data")})
    assert down.exit_code == 1
    assert "cache: docker engine unreachable: Cannot connect to the Docker daemon" in down.output
    calls = (tmp_path / "bin" / "docker.calls").read_text().splitlines()
    assert calls[-1] == "compose -f stack.yml stop redis"


def test_status_shows_the_container_state_beside_the_probe(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        config = tmp_path / "corral.yaml"
        config.write_text(COMPOSE_CONFIG.format(port=listener.getsockname()[1]))
        env = fake_docker(tmp_path, RUNNING)
        result = CliRunner().invoke(build_app(), ["status", "-c", str(config), "--format", "json"],
                                    env={**env, "CORRAL_DATA_DIR": str(tmp_path / "data")})
    service = json.loads(result.output)["services"][0]
    assert result.exit_code == 0 and service["status"] == "up"
    assert service["container"] == {"state": "running", "health": "healthy", "detail": "Up 3 minutes (healthy)"}


def test_status_without_docker_says_so(tmp_path: Path) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text(COMPOSE_CONFIG.format(port=free_port()))
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = CliRunner().invoke(build_app(), ["status", "-c", str(config), "--format", "json"],
                                env={"PATH": str(empty), "CORRAL_DATA_DIR": str(tmp_path / "data")})
    assert json.loads(result.output)["services"][0]["container"]["detail"] == "docker is not installed"
