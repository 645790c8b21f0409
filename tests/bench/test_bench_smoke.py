"""Every benchmark runs end to end in a tiny configuration, so the harness cannot rot.
Nothing here asserts a speed: the numbers are measured by `python -m bench`, not here.
Each run is a real subprocess (`python -m bench <name>`) from the repository root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench(tmp_path: Path, *args: str, timeout: float = 120) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}
    out = subprocess.run([sys.executable, "-m", "bench", *args, "--out", str(tmp_path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"python -m bench {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    data: dict[str, Any] = json.loads((tmp_path / f"{args[0]}.json").read_text())
    assert data["machine"]["nproc"] >= 1
    return data


def test_gateway_benchmark_measures_every_target_with_the_fallback_tools(tmp_path: Path) -> None:
    data = bench(tmp_path, "gateway", "--quick", "--no-wrk", "--no-nginx", "--seconds", "0.3", "--rounds", "1",
                 "--samples", "5", "--concurrency", "1", "4", "--tracing", "1")
    assert data["stub"] == "python" and data["load_generator"] == "asyncio (built-in)"
    points = {(r["mode"], r["concurrency"], r["target"]) for r in data["rows"]}
    assert points == {(m, c, t) for m in ("json", "stream") for c in (1, 4)
                      for t in ("direct", "passthrough", "httpx-proxy", "aiohttp-proxy", "corral", "traced-1")}
    assert data["otlp_sink"]["exports"] > 0 and data["otlp_sink"]["bytes"] > 0  # the traced one exported spans
    assert all(r["vs_untraced"] > 0 for r in data["rows"] if r["target"] == "traced-1")
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in data["rows"])
    assert data["corral_features"]["metrics"] is True
    assert set(data["summary"]["sequential"]["stream"]) == {"direct", "passthrough", "httpx-proxy", "aiohttp-proxy",
                                                            "corral", "traced-1"}
    corral_rows = [r for r in data["rows"] if r["target"] == "corral"]
    assert all(r["vs_httpx_proxy"] > 0 and r["vs_passthrough"] > 0 and r["vs_aiohttp_proxy"] > 0
               for r in corral_rows)
    assert data["corral_log_level"] == "info"  # Corral at its default configuration
    assert "ttft_overhead_ms" in data["summary"]
    assert {t["target"] for t in data["targets"]} >= {"overhead over direct p50, c=1, non-stream"}
    assert (tmp_path / "gateway.png").stat().st_size > 1000


@pytest.mark.skipif(shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(), reason="no nginx")
def test_nginx_stub_answers_the_completion_and_the_stream(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from bench.common import free_port
        from bench.stub import COMPLETION, STREAM, start_stub
    finally:
        sys.path.remove(str(ROOT))
    port = free_port()
    child, kind = start_stub(port, tmp_path)
    try:
        assert kind == "nginx"
        for path, expected in (("/v1/chat/completions", COMPLETION), ("/sse/v1/chat/completions", STREAM)):
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"{}", method="POST")
            with urllib.request.urlopen(request, timeout=10) as resp:
                assert resp.read().decode() == expected
    finally:
        child.stop()
    assert STREAM.endswith("data: [DONE]\n\n")
    assert json.loads(COMPLETION)["choices"][0]["message"]["role"] == "assistant"


def test_clients_benchmark_proxies_through_every_client(tmp_path: Path) -> None:
    data = bench(tmp_path, "clients", "--seconds", "0.3", "--rounds", "1", "--concurrency", "2", "--no-wrk",
                 "--no-nginx")
    rows = {r["client"]: r for r in data["rows"]}
    assert {"none", "httpx", "wire"} <= set(rows)
    assert all(r["rps"] > 0 and r["errors"] == 0 and r["cpu_us"] > 0 for r in rows.values())


def test_accesslog_benchmark_times_both_ways_of_writing_the_line(tmp_path: Path) -> None:
    data = bench(tmp_path, "accesslog", "--lines", "200", "--rounds", "1", "--batch", "50")
    assert [r["format"] for r in data["rows"]] == ["console", "json"]
    assert all(r["stdlib_us"] > 0 and r["record_us"] > 0 and r["record_and_flush_us"] > 0 for r in data["rows"])


def test_startup_benchmark_times_readiness(tmp_path: Path) -> None:
    data = bench(tmp_path, "startup", "--runs", "1", "--no-nginx")
    assert len(data["rows"]) == 1 and data["rows"][0]["ready_s"] > 0
    assert data["targets"][0]["target"] == "ready after exec (median)"


def test_console_benchmark_weighs_the_overview_and_loads_with_and_without_it(tmp_path: Path) -> None:
    if not (os.path.exists("/usr/bin/chromium") and os.path.exists("/usr/bin/chromedriver")):
        if os.environ.get("CORRAL_REQUIRE_SERVICES") == "1":
            pytest.fail("chromium and chromium-driver are required")
        pytest.skip("the console benchmark needs Debian's chromium and chromium-driver")
    data = bench(tmp_path, "console", "--rounds", "1", "--seconds", "0.5", "--no-wrk")
    summary = data["summary"]
    assert 1000 < summary["overview_total_bytes"] < 200 * 1024 and summary["overview_requests"] == 3
    assert len(summary["rps_without_console"]) == len(summary["rps_with_console"]) == 1
    assert all(0 < ms < 10_000 for ms in summary["first_contentful_paint_ms"])


def test_soak_benchmark_counts_requests_rss_and_stored_usage(tmp_path: Path) -> None:
    data = bench(tmp_path, "soak", "--requests", "60", "--warmup", "10", "--chunk-seconds", "0.3",
                 "--concurrency", "2", "--no-wrk", "--no-nginx")
    summary = data["summary"]
    assert summary["requests"] >= 70 and summary["errors"] == 0
    assert summary["rss_before_mb"] > 0 and summary["rss_after_mb"] > 0
    assert set(summary["sent"]) == {"json", "stream", "agent"}
    assert (tmp_path / "soak.png").exists()


def test_fleet_benchmark_stores_every_event_it_sends(tmp_path: Path) -> None:
    data = bench(tmp_path, "fleet", "--nodes", "5", "--events", "10", "--commands", "3")
    summary = data["summary"]
    assert summary["expected"] == 50
    assert summary["stored_distinct"] == 50 and summary["lost"] == 0 and summary["duplicates"] == 0
    assert summary["acked"] == 50
    assert summary["rtt_p50_ms"] > 0


def test_fleet_capacity_of_a_run_shorter_than_a_cpu_clock_tick() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from bench.fleet import capacity
    finally:
        sys.path.remove(str(ROOT))
    assert capacity(0.0) == "not measurable in so short a run"  # was a ZeroDivisionError on a fast machine
    assert capacity(15.9) == "~62893 events/s"


def test_gateway_summary_gives_the_ratio_and_the_cpu_corral_adds_over_the_floor() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from bench.common import Report
        from bench.gateway import summarise
    finally:
        sys.path.remove(str(ROOT))
    report = Report("gateway")
    for mode, floor_cpu, corral_cpu in (("json", 85.0, 193.0), ("stream", 111.0, 352.0)):
        for target, rps, cpu in (("direct", 180_000.0, 3.0), ("passthrough", 11_000.0, floor_cpu),
                                 ("httpx-proxy", 800.0, 1255.0), ("corral", 5_000.0, corral_cpu)):
            report.rows.append({"mode": mode, "concurrency": 16, "target": target, "rps": rps,
                                "p50_ms": 1.0, "p99_ms": 2.0, "server_cpu_us_per_req": cpu})
    summarise(report)
    assert report.summary["json_c16_added_cpu_us"] == 108.0
    assert report.summary["stream_c16_added_cpu_us"] == 241.0
    assert report.summary["json_c16_vs_httpx_proxy"] == 6.25
    ratio = next(t for t in report.targets if t["target"].startswith("Corral / pass-through"))
    assert ratio["value"] == 5_000 / 11_000 and ratio["held"] is False


def test_knowledge_benchmark_measures_quality_per_mode_and_the_embedded_store(tmp_path: Path) -> None:
    data = bench(tmp_path, "knowledge", "--sizes", "300", "--queries", "5")
    quality = data["summary"]["quality"]
    assert set(quality) == {"keyword", "vector", "hybrid"}
    assert all(0 < q["recall_at_5"] <= 1 and 0 < q["mrr"] <= 1 for q in quality.values())
    (row,) = data["rows"]
    assert row["chunks"] == 300 and row["ingest_chunks_per_s"] > 0 and row["hybrid_p99_ms"] > 0

