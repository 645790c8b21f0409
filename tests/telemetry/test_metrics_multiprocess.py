"""Multiprocess mode (`corral serve --workers N`): two processes write to one
directory; a scrape answered by either sums both, gauges included, without the other
process ever answering a scrape itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

# One worker: counts calls, watches a queue and a deployment, refreshes its gauges in the
# background (`start`), never renders. It waits for a line on stdin before it stops.
WORKER = """
import asyncio, sys
from corral.telemetry.metrics import DeploymentHealth, GatewayMetrics

async def main() -> None:
    metrics = GatewayMetrics(refresh_seconds=0.05)
    assert metrics.write_through
    metrics.watch_queue("usage", lambda: 5)
    metrics.deployments = lambda: [DeploymentHealth("m", "p/m", False, 12.5)]
    for _ in range(3):
        metrics.observe_call(surface="openai", model="m", status=200, seconds=0.2, tokens=(10, 2, 0, 0))
    metrics.observe_overhead("openai", 0.001)
    await metrics.start()
    await asyncio.sleep(0.2)  # several refreshes
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    await metrics.stop()

asyncio.run(main())
"""

# The other worker: counts its own calls and answers the scrape.
SCRAPER = """
from corral.telemetry.metrics import GatewayMetrics

metrics = GatewayMetrics()
metrics.watch_queue("usage", lambda: 2)
for _ in range(int(__import__("sys").argv[1])):
    metrics.observe_call(surface="openai", model="m", status=200, seconds=0.2, tokens=(10, 2, 0, 0))
print(metrics.render()[0].decode())
metrics.worker_exit()  # as a worker's shutdown does
"""


def env_for(directory: Path) -> dict[str, str]:
    return {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}


def scrape(directory: Path, calls: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    done = subprocess.run([sys.executable, "-c", SCRAPER, str(calls)], env=env_for(directory), capture_output=True,
                          text=True, timeout=30, check=True)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(done.stdout) for s in family.samples}


def test_a_scrape_in_one_worker_sums_every_workers_counters_and_gauges(tmp_path: Path) -> None:
    worker = subprocess.Popen([sys.executable, "-c", WORKER], env=env_for(tmp_path), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None and worker.stdin is not None
        assert worker.stdout.readline().strip() == "ready", worker.stderr.read() if worker.stderr else ""
        samples = scrape(tmp_path, calls=2)
        _, errors = worker.communicate("stop\n", timeout=30)
        assert worker.returncode == 0, errors
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate(timeout=5)
    labels = (("model", "m"), ("status", "200"), ("surface", "openai"))
    assert samples[("corral_requests_total", labels)] == 5.0  # 3 + 2
    assert samples[("corral_tokens_total", (("kind", "input"), ("model", "m")))] == 50.0
    assert samples[("corral_request_duration_seconds_count", (("model", "m"), ("surface", "openai")))] == 5.0
    assert samples[("corral_overhead_seconds_count", (("surface", "openai"),))] == 1.0  # the worker's alone
    # Gauges: the worker that did not answer the scrape had published its own already.
    assert samples[("corral_batch_queue_depth", (("writer", "usage"),))] == 7.0  # livesum: 5 + 2
    deployment = (("alias", "m"), ("deployment", "p/m"))
    assert samples[("corral_deployment_healthy", deployment)] == 0.0
    assert samples[("corral_deployment_cooldown_seconds", deployment)] == 12.5
    assert not any(name.endswith("_created") for name, _ in samples)  # not exported in multiprocess mode

    after = scrape(tmp_path, calls=0)  # the worker stopped: its counts stay, its live gauges go
    assert after[("corral_requests_total", labels)] == 5.0
    assert after[("corral_batch_queue_depth", (("writer", "usage"),))] == 2.0
    assert ("corral_deployment_healthy", deployment) not in after
