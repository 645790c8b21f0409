from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.boot import BootManager, Launcher, Outcome, ProbeResult, Status, boot_summary, effective_services
from corral.boot.manager import backoff_delay
from corral.boot.specs import ServiceSpec, StartSpec
from corral.config.schema import CorralConfig

# A service that refuses to start unless its dependency already answers, then serves HTTP:
# if the boot manager started it out of order, it exits and the boot fails.
SERVICE_SCRIPT = """
import http.server, socket, sys, time
port, dep, order = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if dep:
    try:
        socket.create_connection(("127.0.0.1", dep), timeout=1).close()
    except OSError:
        print(f"dependency on port {dep} is not up", flush=True)
        sys.exit(3)
time.sleep(0.3)  # not instantly healthy: the manager has to wait for it
with open(order, "a") as f:
    f.write(f"{port}\\n")
http.server.ThreadingHTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


def http_spec(name: str, port: int, **fields: Any) -> ServiceSpec:
    return ServiceSpec(name=name, type="http", health_kind="http", host="127.0.0.1", port=port, **fields)


def scripted(*statuses: Status) -> tuple[list[str], Any]:
    """A prober that replays `statuses` (the last one repeats) and records each call."""
    calls: list[str] = []
    queue = list(statuses)

    async def prober(spec: ServiceSpec) -> ProbeResult:
        calls.append(spec.name)
        status = queue.pop(0) if len(queue) > 1 else queue[0]
        return ProbeResult(status, 1.0 if status is Status.UP else None, f"{status.value} by script")

    return calls, prober


async def test_three_level_chain_is_started_in_dependency_order(
    fakes: Any, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    ports = [fakes.free_port() for _ in range(3)]
    order = tmp_path / "order.txt"
    names = ["store", "api", "web"]
    specs = [
        http_spec(name, port, depends_on=(names[i - 1],) if i else (), backoff=0.05, deadline=20,
                  start=StartSpec(command=(sys.executable, "-c", SERVICE_SCRIPT, str(port),
                                           str(ports[i - 1] if i else 0), str(order))))
        for i, (name, port) in enumerate(zip(names, ports, strict=True))
    ]
    launcher = Launcher(log_dir=tmp_path / "logs")
    manager = BootManager(list(reversed(specs)), http=http, launcher=launcher, rng=random.Random(1))
    assert [[s.name for s in level] for level in manager.levels] == [["store"], ["api"], ["web"]]
    try:
        report = await manager.run()
        processes = [launched.process for launched in launcher.launched]
    finally:
        await launcher.stop_all(grace=5)
    assert [(o.spec.name, o.outcome) for o in report.outcomes] == [
        ("store", Outcome.STARTED), ("api", Outcome.STARTED), ("web", Outcome.STARTED)]
    assert order.read_text().split() == [str(p) for p in ports]
    assert all(o.attempts >= 2 for o in report.outcomes)  # first probe found it down, then waited
    assert report.counts()["started"] == 3 and not report.blocked
    assert all(p is not None and p.poll() is not None for p in processes)  # stopped on the way out
    assert (tmp_path / "logs" / "store.log").exists()


async def test_services_on_one_level_are_probed_in_parallel(http: httpx.AsyncClient) -> None:
    in_flight: list[int] = [0, 0]  # now, max

    async def prober(spec: ServiceSpec) -> ProbeResult:
        in_flight[0] += 1
        in_flight[1] = max(in_flight[1], in_flight[0])
        await asyncio.sleep(0.05)
        in_flight[0] -= 1
        return ProbeResult(Status.UP, 1.0, "ok")

    specs = [http_spec(f"s{i}", 1000 + i) for i in range(4)]
    report = await BootManager(specs, http=http, prober=prober).run()
    assert in_flight[1] == 4
    assert report.counts()["already_running"] == 4


async def test_http_service_that_becomes_healthy_after_a_delay(fakes: Any, http: httpx.AsyncClient) -> None:
    async with fakes.fake_http(fakes.healthy_after(0.6)) as (port, seen):
        spec = http_spec("slow", port, remote=True, health_path="/health", backoff=0.1, retries=30)
        report = await BootManager([spec], http=http, rng=random.Random(7)).run()
    outcome = report.outcome("slow")
    assert outcome.outcome is Outcome.REMOTE
    assert outcome.status is Status.UP
    assert outcome.attempts >= 3
    assert len(seen) == outcome.attempts
    assert outcome.detail.endswith(f"(healthy after {outcome.attempts} probes)")


async def test_rejected_credentials_stop_retrying_at_once(fakes: Any, http: httpx.AsyncClient) -> None:
    async with fakes.fake_postgres("28P01", 'password authentication failed for user "app"') as port:
        spec = ServiceSpec(name="db", type="postgres", health_kind="postgres", remote=True, retries=20,
                           url=f"postgresql://app:wrong@127.0.0.1:{port}/app")
        report = await BootManager([spec], http=http).run()
    outcome = report.outcome("db")
    assert (outcome.outcome, outcome.status, outcome.attempts) == (Outcome.FAILED, Status.REJECTED, 1)
    assert "password authentication failed" in outcome.detail
    assert outcome.detail.endswith("(not retried: fix the credentials or target in the service URL)")
    assert report.blocked


async def test_retries_and_deadline_bound_the_wait(http: httpx.AsyncClient) -> None:
    calls, prober = scripted(Status.DOWN)
    few = http_spec("few", 1, remote=True, retries=2, backoff=0.01)
    report = await BootManager([few], http=http, prober=prober).run()
    assert calls == ["few"] * 3
    assert report.outcome("few").attempts == 3
    assert report.outcome("few").detail == "gave up after 3 probes: down by script"

    _, prober = scripted(Status.STARTING)
    slow = http_spec("slow", 1, remote=True, retries=1000, backoff=0.05, deadline=0.4)
    outcome = (await BootManager([slow], http=http, prober=prober).run()).outcome("slow")
    assert outcome.outcome is Outcome.FAILED
    assert outcome.detail.startswith(f"deadline passed after {outcome.attempts} probes: starting")
    assert 2 <= outcome.attempts < 20


async def test_strict_mode_stops_after_a_required_failure(http: httpx.AsyncClient) -> None:
    _, prober = scripted(Status.DOWN)

    async def probe(spec: ServiceSpec) -> ProbeResult:
        return await prober(spec) if spec.name == "db" else ProbeResult(Status.UP, 1.0, "ok")

    specs = [http_spec("db", 1, retries=0), http_spec("api", 2, depends_on=("db",)), http_spec("other", 3),
             http_spec("late", 4, depends_on=("other",))]
    strict = await BootManager(specs, http=http, prober=probe).run()
    assert {o.spec.name: o.outcome for o in strict.outcomes} == {
        "db": Outcome.FAILED, "other": Outcome.ALREADY_RUNNING, "api": Outcome.SKIPPED, "late": Outcome.SKIPPED}
    assert strict.outcome("late").detail == "not attempted: required service 'db' failed (strict dependencies)"
    assert strict.blocked and strict.to_dict()["status"] == "blocked"

    degraded = await BootManager(specs, http=http, prober=probe, strict=False).run()
    assert {o.spec.name: o.outcome for o in degraded.outcomes} == {
        "db": Outcome.FAILED, "other": Outcome.ALREADY_RUNNING, "api": Outcome.SKIPPED,
        "late": Outcome.ALREADY_RUNNING}
    assert degraded.outcome("api").detail == "not attempted: dependency 'db' is failed"
    assert any(w.startswith("required service 'db' failed") for w in degraded.warnings)


async def test_disabled_and_optional_services_do_not_block(http: httpx.AsyncClient) -> None:
    _, prober = scripted(Status.DOWN)
    specs = [http_spec("off", 1, enabled=False), http_spec("nice", 2, required=False, retries=0)]
    report = await BootManager(specs, http=http, prober=prober).run()
    assert report.outcome("off").outcome is Outcome.SKIPPED
    assert report.outcome("off").detail.startswith("disabled (SVC_OFF_ENABLED")
    assert report.outcome("nice").outcome is Outcome.FAILED
    assert not report.blocked
    assert report.to_dict()["status"] == "degraded"


async def test_a_start_command_that_dies_fails_fast_with_its_output(
    fakes: Any, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    spec = http_spec("crashy", fakes.free_port(), retries=50, backoff=0.05, deadline=20,
                     start=StartSpec(command=(sys.executable, "-c", "print('boom: no config'); raise SystemExit(3)")))
    launcher = Launcher(log_dir=tmp_path)
    report = await BootManager([spec], http=http, launcher=launcher).run()
    outcome = report.outcome("crashy")
    assert outcome.outcome is Outcome.FAILED
    assert outcome.detail == "start command exited with code 3; last output: boom: no config"
    assert outcome.attempts < 50


async def test_remote_flag_from_environment_means_probe_only_never_start(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    cfg = CorralConfig.model_validate({"services": {"api": {
        "type": "http", "port": 9, "start": {"command": "false-never-run"}, "retries": 0}}})
    [spec] = effective_services(cfg, {"SVC_API_REMOTE": "true", "SVC_API_HOST": "127.0.0.1"})
    calls, prober = scripted(Status.UP)
    launcher = Launcher(log_dir=tmp_path)
    report = await BootManager([spec], http=http, launcher=launcher, prober=prober).run()
    assert report.outcome("api").outcome is Outcome.REMOTE
    assert launcher.launched == [] and calls == ["api"]


async def test_compose_service_is_started_with_docker_compose(tmp_path: Path, http: httpx.AsyncClient) -> None:
    record = tmp_path / "argv.txt"
    docker = tmp_path / "docker"
    docker.write_text(f"#!/bin/sh\necho \"$@\" > {record}\n")
    docker.chmod(0o755)

    async def prober(spec: ServiceSpec) -> ProbeResult:
        if record.exists():
            return ProbeResult(Status.UP, 1.0, "ok")
        return ProbeResult(Status.DOWN, None, "connection refused")

    spec = http_spec("vec", 6333, backoff=0.01, start=StartSpec(
        compose_service="qdrant", compose_file="stack.yml", compose_profile="vectors"))
    launcher = Launcher(log_dir=tmp_path, docker=str(docker))
    report = await BootManager([spec], http=http, launcher=launcher, prober=prober).run()
    assert report.outcome("vec").outcome is Outcome.STARTED
    assert record.read_text().split() == ["compose", "-f", "stack.yml", "--profile", "vectors", "up", "-d", "qdrant"]

    launcher = Launcher(log_dir=tmp_path, docker=str(tmp_path / "no-docker-here"))
    record.unlink()
    report = await BootManager([spec], http=http, launcher=launcher, prober=prober).run()
    assert report.outcome("vec").outcome is Outcome.FAILED
    assert report.outcome("vec").detail == (
        "vec: docker is not installed; start qdrant yourself or set SVC_VEC_REMOTE=true if it runs elsewhere")


@pytest.mark.postgres
@pytest.mark.redis
async def test_real_postgres_and_redis_from_config_urls_are_already_running(
    postgres_url: str, redis_url: str, http: httpx.AsyncClient
) -> None:
    cfg = CorralConfig.model_validate({"database": {"url": postgres_url}, "cache": {"url": redis_url}})
    report = await BootManager(effective_services(cfg, {}), http=http).run()
    assert [(o.spec.name, o.outcome, o.detail) for o in report.outcomes] == [
        ("postgres", Outcome.ALREADY_RUNNING, "SELECT 1 ok"), ("redis", Outcome.ALREADY_RUNNING, "PONG")]


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    rng = random.Random(3)
    delays = [backoff_delay(attempt, 0.25, rng) for attempt in range(1, 9)]
    for attempt, delay in enumerate(delays, start=1):
        ceiling = min(5.0, 0.25 * 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) == len(delays)  # jittered, not fixed sleeps


async def test_boot_summary_shape(http: httpx.AsyncClient) -> None:
    assert boot_summary(None) == {"status": "not_run", "services": [], "counts": {
        "started": 0, "remote": 0, "already_running": 0, "failed": 0, "skipped": 0}}
    _, prober = scripted(Status.UP)
    spec = ServiceSpec(name="db", type="postgres", health_kind="postgres", url="postgresql://u:secret@h/db")
    summary = boot_summary(await BootManager([spec], http=http, prober=prober).run())
    assert set(summary) == {"status", "strict", "blocked", "started_at", "duration_ms", "counts", "services",
                            "warnings"}
    assert summary["status"] == "ok" and summary["counts"]["already_running"] == 1
    [service] = summary["services"]
    assert service["address"] == "postgresql://u:***@h/db"
    assert "secret" not in str(summary)
