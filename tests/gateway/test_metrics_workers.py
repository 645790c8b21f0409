"""`corral serve --workers 2`: `/metrics` sums what every worker process counted."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from corral.testing.process import start_serve

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

REQUESTS = 60


def requests_total(base_url: str) -> float:
    # A fresh connection per scrape, so scrapes land on either worker.
    text = httpx.get(f"{base_url}/metrics", timeout=10, headers={"connection": "close"}).text
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "corral_requests_total" and s.labels.get("status") == "200")


def chat(base_url: str, n: int) -> int:
    body = {"model": "scripted", "messages": [{"role": "user", "content": f"hello {n}"}]}
    return httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=30,
                      headers={"connection": "close"}).status_code


@pytest.mark.slow
def test_counts_from_two_workers_add_up_in_every_scrape(tmp_path: Path) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text(CONFIG)
    metrics_dir = tmp_path / "prometheus"
    server = start_serve(config, extra=["--workers", "2"], env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
                         ready_timeout=60)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
            statuses = list(pool.map(lambda n: chat(server.base_url, n), range(REQUESTS)))
        assert statuses == [200] * REQUESTS
        scrapes = [requests_total(server.base_url) for _ in range(8)]
        writers = {p.name.rsplit("_", 1)[-1] for p in metrics_dir.glob("counter_*.db")}
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)
    assert scrapes == [float(REQUESTS)] * 8
    assert len(writers) == 2, f"expected both workers to have served requests, got {writers}"
