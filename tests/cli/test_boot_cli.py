"""`corral up`, `status`, `monitor` and `doctor` end to end through the CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from corral.boot.specs import ServiceSpec
from corral.cli import doctor, monitor, status, up
from corral.cli.monitor import Snapshot, collect, render, request_totals
from corral.testing.fakes.openai import FakeOpenAI

STACK = Path(__file__).resolve().parents[2] / "examples" / "stack.yaml"

APP_SCRIPT = """
import typer
from corral.cli import doctor, monitor, status, up
app = typer.Typer()
for module in (up, status, monitor, doctor):
    module.register(app)
app()
"""


def boot_app() -> typer.Typer:
    app = typer.Typer()
    for module in (up, status, monitor, doctor):
        module.register(app)
    return app


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(boot_app(), list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def stack_env(postgres_url: str, redis_url: str) -> dict[str, str]:
    # examples/stack.yaml reads DATABASE_URL / REDIS_URL (defaulting to the local servers).
    return {"DATABASE_URL": postgres_url, "REDIS_URL": redis_url}


# ---- status -------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
def test_status_of_the_example_stack_reports_both_services_up(stack_env: dict[str, str]) -> None:
    code, output = invoke("status", "--config", str(STACK), env=stack_env)
    assert code == 0, output
    rows = {line.split("│")[1].strip(): line for line in output.splitlines() if line.count("│") > 4}
    assert " up " in rows["postgres"] and "SELECT 1 ok" in rows["postgres"]
    assert " up " in rows["redis"] and "PONG" in rows["redis"]


@pytest.mark.postgres
@pytest.mark.redis
def test_svc_redis_port_1_makes_redis_report_down_and_exit_1(stack_env: dict[str, str]) -> None:
    code, output = invoke("status", "--config", str(STACK), "--format", "json",
                          env={**stack_env, "SVC_REDIS_PORT": "1"})
    assert code == 1
    report = json.loads(output)
    services = {s["name"]: s for s in report["services"]}
    assert report["ok"] is False
    assert services["postgres"]["status"] == "up"
    assert (services["redis"]["status"], services["redis"]["detail"]) == ("down", "connection refused at 127.0.0.1:1")
    assert services["redis"]["address"] == "redis://127.0.0.1:1/0"


def test_remote_flags_and_ports_from_a_dotenv_file_beside_the_config(tmp_path: Path) -> None:
    # HelixAgent's hybrid guide keeps SVC_* variables in an env file (.env.remote).
    dead = free_port()
    (tmp_path / "corral.yaml").write_text("services:\n  redis: {type: redis, port: 6379}\n")
    (tmp_path / ".env").write_text(f"SVC_REDIS_PORT={dead}\nSVC_REDIS_REMOTE=true\n")
    code, output = invoke("status", "-c", str(tmp_path / "corral.yaml"), "--format", "json")
    [redis] = json.loads(output)["services"]
    assert code == 1
    assert (redis["remote"], redis["address"], redis["status"]) == (True, f"127.0.0.1:{dead}", "down")


def test_status_with_no_services_says_so(tmp_path: Path) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text("version: 1\n")
    code, output = invoke("status", "-c", str(config))
    assert code == 0
    assert "no services to check (database: sqlite, cache: in-process" in output


def test_status_rejects_a_bad_override_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text("services:\n  redis: {type: redis, port: 6379}\n")
    code, output = invoke("status", "-c", str(config), env={"SVC_REDIS_REMOTE": "perhaps"})
    assert code == 2
    assert "SVC_REDIS_REMOTE='perhaps': expected true or false" in output


def test_a_dependency_cycle_is_reported_with_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text("services:\n  a: {type: tcp, port: 1, depends_on: [b]}\n"
                      "  b: {type: tcp, port: 2, depends_on: [a]}\n")
    code, output = invoke("status", "-c", str(config))
    assert code == 2
    assert f"{config}:" in output and "dependency cycle: a -> b -> a" in output


# ---- up -------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
def test_up_only_deps_verifies_the_stack_and_exits_0(stack_env: dict[str, str]) -> None:
    code, output = invoke("up", "--only-deps", "-c", str(STACK), "--format", "json", env=stack_env)
    assert code == 0, output
    summary = json.loads(output[output.index("{"):])
    assert summary["status"] == "ok"
    assert summary["counts"] == {"started": 0, "remote": 0, "already_running": 2, "failed": 0, "skipped": 0}


@pytest.mark.postgres
@pytest.mark.redis
def test_up_blocks_on_a_required_failure_unless_not_strict(stack_env: dict[str, str]) -> None:
    env = {**stack_env, "SVC_REDIS_PORT": "1", "SVC_REDIS_RETRY_COUNT": "1"}
    code, output = invoke("up", "--only-deps", "-c", str(STACK), env=env)
    assert code == 1
    assert "BOOT BLOCKED: 1 required service(s) failed: redis" in output
    assert "fix: redis: start it, add a start: command or compose_service" in output

    code, output = invoke("up", "--only-deps", "--no-strict-dependencies", "-c", str(STACK), env=env)
    assert code == 0
    assert "starting degraded (--no-strict-dependencies)" in output
    assert "warning: required service 'redis' failed: gave up after 2 probes" in output


def test_up_only_deps_holds_started_commands_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    config = web_service_config(tmp_path, port)
    env = {**os.environ, "CORRAL_DATA_DIR": str(tmp_path / "data")}
    corral = subprocess.Popen([sys.executable, "-c", APP_SCRIPT, "up", "--only-deps", "-c", str(config)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        read_until(corral, "holding 1 started service")
        assert httpx.get(f"http://127.0.0.1:{port}/", trust_env=False).status_code == 200
        corral.send_signal(signal.SIGTERM)
        assert corral.wait(timeout=20) == 0
    finally:
        if corral.poll() is None:
            corral.kill()
            corral.wait()
        if corral.stdout:
            corral.stdout.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", trust_env=False)
    assert (tmp_path / "data" / "logs" / "web.log").exists()  # the command's output is kept


def web_service_config(tmp_path: Path, port: int, extra: str = "") -> Path:
    config = tmp_path / "corral.yaml"
    config.write_text(
        extra
        + "services:\n"
        "  web:\n"
        "    type: http\n"
        f"    port: {port}\n"
        "    backoff: 0.05\n"
        "    start:\n"
        f"      command: [{json.dumps(sys.executable)}, -m, http.server, '{port}', --bind, 127.0.0.1]\n"
        f"      cwd: {json.dumps(str(tmp_path))}\n"
    )
    return config


def read_until(process: subprocess.Popen[str], marker: str, seconds: float = 30) -> str:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if marker in line or not line:
            break
    text = "".join(lines)
    assert marker in text, text
    return text


def test_up_starts_the_stack_then_serves_and_stops_what_it_started(tmp_path: Path) -> None:
    web, gateway = free_port(), free_port()
    config = web_service_config(tmp_path, web)
    env = {**os.environ, "CORRAL_DATA_DIR": str(tmp_path / "data")}
    corral = subprocess.Popen([sys.executable, "-c", APP_SCRIPT, "up", "-c", str(config), "--port", str(gateway)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        boot_log = read_until(corral, f"serving on http://127.0.0.1:{gateway}")
        assert "1 started, 0 remote, 0 already running, 0 failed, 0 skipped" in boot_log
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{gateway}/health", trust_env=False)
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert health.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{web}/", trust_env=False).status_code == 200
        corral.send_signal(signal.SIGTERM)
        assert corral.wait(timeout=30) == 0
    finally:
        if corral.poll() is None:
            corral.kill()
            corral.wait()
        if corral.stdout:
            corral.stdout.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{web}/", trust_env=False)


def test_up_only_deps_detach_leaves_commands_running_with_pid_files(tmp_path: Path) -> None:
    port = free_port()
    code, output = invoke("up", "--only-deps", "--detach", "-c", str(web_service_config(tmp_path, port)),
                          env={"CORRAL_DATA_DIR": str(tmp_path / "data")})
    pid_file = tmp_path / "data" / "run" / "web.pid"
    pid = int(pid_file.read_text())
    try:
        assert code == 0, output
        assert "1 started" in output
        assert httpx.get(f"http://127.0.0.1:{port}/", trust_env=False).status_code == 200
    finally:
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)  # our child when started in-process: reap it
    except ChildProcessError:
        finished = 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return finished == 0


# ---- monitor ----------------------------------------------------------------------

METRICS = """# HELP corral_http_requests_total Requests
# TYPE corral_http_requests_total counter
corral_http_requests_total{{route="/v1/chat/completions",status="200"}} {ok}
corral_http_requests_total{{route="/v1/chat/completions",status="502"}} {bad}
corral_http_requests_total{{route="/v1/models",status="401"}} 3
"""


def mock_stack(ok: int, bad: int, *, metrics_status: int = 200, token_ok: bool = True) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.url.host == "gateway":
            if path == "/health":
                return httpx.Response(200, json={"status": "ok", "version": "9.9.9"})
            if path == "/metrics":
                return httpx.Response(metrics_status, text=METRICS.format(ok=ok, bad=bad))
        if request.url.host == "supervisor" and path == "/api/v1/nodes":
            if not token_ok or request.headers.get("authorization") != "Bearer fleet-token":
                return httpx.Response(401, json={"error": {"code": "unauthorized"}})
            nodes = [{"node_id": "a", "status": "online"}, {"node_id": "b", "status": "online"},
                     {"node_id": "c", "status": "offline"}]
            return httpx.Response(200, json={"data": nodes, "meta": {"total": 3}})
        if request.url.host == "api.internal":
            return httpx.Response(200, json={"ok": True})
        return httpx.Response(404)

    return httpx.MockTransport(handler)


def text_of(snapshot: Snapshot) -> str:
    out = Console(record=True, width=150, file=open(os.devnull, "w"))  # noqa: SIM115
    out.print(render(snapshot))
    out.file.close()
    return out.export_text()


async def test_dashboard_shows_services_gateway_rates_and_fleet_nodes() -> None:
    specs = [ServiceSpec(name="api", type="http", health_kind="http", url="http://api.internal", health_path="/ok")]
    sources = {"gateway_url": "http://gateway", "supervisor_url": "http://supervisor",
               "supervisor_token": "fleet-token"}
    async with httpx.AsyncClient(transport=mock_stack(ok=100, bad=4)) as http:
        first = await collect(specs, http, **sources)
    first.clock -= 10.0  # the next refresh comes "10 s later"
    async with httpx.AsyncClient(transport=mock_stack(ok=118, bad=6)) as http:
        second = await collect(specs, http, previous=first, **sources)
    text = text_of(second)
    gateway = second.gateway
    assert gateway is not None and gateway.request_rate is not None and gateway.error_rate is not None
    assert gateway.request_rate == pytest.approx(2.0, rel=0.02)  # (127 - 107) requests over ~10 s
    assert gateway.error_rate == pytest.approx(0.2, rel=0.02)  # (6 - 4) 5xx over ~10 s
    assert "api" in text and "GET http://api.internal/ok -> 200" in text
    assert "gateway http://gateway" in text and "ok (" in text and "9.9.9" in text
    assert f"requests      127 total, {gateway.request_rate:.2f}/s" in text  # 118 + 6 + 3 = 127
    assert f"errors (5xx)  6 total, {gateway.error_rate:.2f}/s" in text
    assert "nodes online: 2 of 3" in text
    assert "healthy 1 | not up 0 | disabled 0 | last updated" in text
    assert "rate after the next refresh" in text_of(first)


async def test_dashboard_survives_absent_or_refusing_sources() -> None:
    async with httpx.AsyncClient(transport=mock_stack(1, 0, metrics_status=401, token_ok=False)) as http:
        snapshot = await collect([], http, gateway_url="http://gateway", supervisor_url="http://supervisor",
                                 supervisor_token="wrong")
    text = text_of(snapshot)
    assert "/metrics answered 401 (pass --api-key)" in text
    assert "supervisor rejected the token" in text
    assert "services: none configured" in text

    port = free_port()
    async with httpx.AsyncClient(trust_env=False) as http:
        snapshot = await collect([], http, gateway_url=f"http://127.0.0.1:{port}")
    assert "down — not reachable: ConnectError" in text_of(snapshot)
    assert snapshot.fleet is None


def test_request_totals_parse_prometheus_text() -> None:
    assert request_totals(METRICS.format(ok=10, bad=2)) == (15.0, 2.0)
    assert request_totals("# TYPE other_total counter\nother_total 5\n") is None


def test_request_totals_read_the_gateways_own_metrics() -> None:
    from corral.telemetry.metrics import GatewayMetrics

    metrics = GatewayMetrics()
    for code in (200, 200, 200, 429, 502, 503):
        metrics.observe_call(surface="openai", model="assistant", status=code, seconds=0.01)
    body, _ = metrics.render()
    assert request_totals(body.decode()) == (6.0, 2.0)


@pytest.mark.postgres
@pytest.mark.redis
def test_monitor_live_refreshes_a_bounded_number_of_times(stack_env: dict[str, str]) -> None:
    code, output = invoke("monitor", "-c", str(STACK), "--live", "--iterations", "2", "--interval", "0.1",
                          "--no-gateway", env=stack_env)
    assert code == 0, output
    assert "services" in output and "PONG" in output and "SELECT 1 ok" in output
    assert "healthy 2 | not up 0" in output


# ---- doctor -------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
def test_doctor_passes_on_the_example_stack_with_a_working_provider(tmp_path: Path, stack_env: dict[str, str]) -> None:
    with FakeOpenAI(api_key="right-key") as good, FakeOpenAI(api_key="right-key") as other:
        config = tmp_path / "corral.yaml"
        config.write_text(STACK.read_text().replace("version: 1\n", (
            "version: 1\n"
            f"server: {{port: {free_port()}}}\n"
            "providers:\n"
            f"  good: {{type: openai, base_url: '{good.base_url}', api_key: right-key}}\n"
            f"  stale: {{type: openai, base_url: '{other.base_url}', api_key: old-key}}\n"
        )))
        code, output = invoke("doctor", "-c", str(config), "--format", "json", env=stack_env)
    checks = {c["check"]: c for c in json.loads(output)["checks"]}
    assert code == 1
    assert [checks[k]["result"] for k in ("config", "port", "data dir", "service postgres", "service redis")] == [
        "ok"] * 5
    assert checks["provider good"]["result"] == "ok"
    assert checks["provider good"]["detail"].startswith("key accepted, ")
    stale = checks["provider stale"]
    assert (stale["result"], stale["detail"]) == ("fail", "API key rejected (401)")
    assert checks["provider stale"]["fix"] == "set OPENAI_API_KEY or providers.stale.api_key with a valid key"
    assert "old-key" not in output


def test_doctor_reports_each_failure_with_a_fix(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        dead = free_port()
        config = tmp_path / "corral.yaml"
        config.write_text(f"server: {{port: {port}}}\nservices:\n  cache: {{type: redis, port: {dead}, retries: 0}}\n")
        code, output = invoke("doctor", "-c", str(config), "--format", "json")
    checks = {c["check"]: c for c in json.loads(output)["checks"]}
    assert code == 1
    assert checks["port"]["result"] == "fail"
    assert checks["port"]["fix"] == f"stop what listens on {port} (e.g. a running corral), or set server.port / --port"
    assert checks["service cache"]["detail"] == f"127.0.0.1:{dead}: down: connection refused at 127.0.0.1:{dead}"
    assert checks["service cache"]["fix"] == (
        "start it (corral up --only-deps), or point SVC_CACHE_HOST / SVC_CACHE_PORT at where it runs")
    assert checks["data dir"]["result"] == "ok"


def test_doctor_points_at_the_config_line_to_fix(tmp_path: Path) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text("version: 1\nserver:\n  prot: 8080\n")
    code, output = invoke("doctor", "-c", str(config), "--format", "json")
    checks = json.loads(output)["checks"]
    assert code == 1
    assert checks[0]["check"] == "config" and checks[0]["result"] == "fail"
    assert checks[0]["fix"] == f"edit {config} line 3 (server.prot)"
    assert [c["check"] for c in checks[1:]] == ["data dir", "services"]
