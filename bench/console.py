"""The web console's cost: the overview's page weight and time to first render in headless
Chromium, and whether a console open on the overview moves the gateway's throughput.

The gateway runs in this process on a scripted echo model; the load is chat completions
from N concurrent clients, in alternating rounds with and without a signed-in console
following the overview's live charts (server-sent events), so drift hits both arms."""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
from typing import Any

import httpx

from bench.common import Report

MASTER = "sk-bench-console-master-0123456789"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=2000, help="Chat requests per round.")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="Rounds per arm (alternating).")
    parser.add_argument("--no-browser", action="store_true", help="Skip the Chromium page measurements.")
    parser.add_argument("--out", default="bench/results")


def _app() -> Any:
    from corral.config.schema import CorralConfig
    from corral.gateway.app import create_app
    from corral.testing.scripted import ScriptedProvider

    config = CorralConfig.model_validate({
        "auth": {"master_key": MASTER}, "providers": {"echo": {"type": "scripted"}},
        "models": {"echo": {"provider": "echo", "model": "echo"}}})
    return create_app(config, providers={"echo": ScriptedProvider.from_steps("echo", [], echo=True)})


async def _sign_in(client: httpx.AsyncClient) -> None:
    page = await client.get("/ui/login")
    match = CSRF.search(page.text)
    assert match
    await client.post("/ui/login", data={"csrf": match.group(1), "secret": MASTER, "next": ""})


async def _round(url: str, requests: int, concurrency: int) -> float:
    body = {"model": "echo", "messages": [{"role": "user", "content": "hello"}]}
    headers = {"authorization": f"Bearer {MASTER}"}
    left = requests

    async with httpx.AsyncClient(base_url=url, headers=headers, limits=httpx.Limits(max_connections=concurrency),
                                 timeout=30) as client:
        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                response = await client.post("/v1/chat/completions", json=body)
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - started)


async def _follow(url: str, stop: asyncio.Event, updates: list[float]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=None) as client:
        await _sign_in(client)
        async with client.stream("GET", "/ui/live/overview") as stream:
            async for line in stream.aiter_lines():
                if line.startswith("event: html"):
                    updates.append(time.perf_counter())
                if stop.is_set():
                    break


async def _load(args: argparse.Namespace) -> dict[str, Any]:
    from corral.testing.server import serve_app

    off: list[float] = []
    on: list[float] = []
    updates: list[float] = []
    async with serve_app(_app()) as url:
        await _round(url, min(args.requests, 300), args.concurrency)  # warm-up
        for _ in range(args.rounds):
            off.append(await _round(url, args.requests, args.concurrency))
            stop = asyncio.Event()
            follower = asyncio.create_task(_follow(url, stop, updates))
            await asyncio.sleep(0.5)
            on.append(await _round(url, args.requests, args.concurrency))
            stop.set()
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
    return {"rps_without_console": off, "rps_with_console": on, "live_updates_seen": len(updates)}


def _page(url_base: str) -> dict[str, Any]:
    """Overview weight (bytes transferred, from the browser's resource timing) and first paint."""
    import os
    import shutil
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="corral-bench-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"{url_base}/ui/login")
        driver.find_element("name", "secret").send_keys(MASTER)
        driver.find_element("css selector", "form button[type=submit]").click()
        paints, sizes = [], []
        for _ in range(5):
            driver.execute_script("performance.clearResourceTimings()")
            driver.get(f"{url_base}/ui/")
            time.sleep(0.2)
            timing = driver.execute_script(
                "const n = performance.getEntriesByType('navigation')[0];"
                "const p = performance.getEntriesByName('first-contentful-paint')[0];"
                "const r = performance.getEntriesByType('resource').filter(e => !e.name.includes('/live/'));"
                "return {fcp: p ? p.startTime : null, html: n.encodedBodySize,"
                " assets: r.reduce((s, e) => s + e.encodedBodySize, 0), count: r.length};")
            paints.append(timing["fcp"])
            sizes.append(timing)
        first = driver.execute_script("return 0")  # keep the session warm for the cached run above
        del first
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    cold = sizes[0]
    return {"overview_html_bytes": cold["html"], "overview_asset_bytes": cold["assets"],
            "overview_total_bytes": cold["html"] + cold["assets"], "overview_requests": 1 + cold["count"],
            "first_contentful_paint_ms": [round(p, 1) for p in paints if p is not None],
            "chromium": os.path.exists("/usr/bin/chromium")}


def run(args: argparse.Namespace) -> Report:
    report = Report("console")
    load = asyncio.run(_load(args))
    page: dict[str, Any] = {}
    if not args.no_browser:
        async def measure() -> dict[str, Any]:
            from corral.testing.server import serve_app

            async with serve_app(_app()) as url:
                return await asyncio.to_thread(_page, url)

        page = asyncio.run(measure())
    off, on = load["rps_without_console"], load["rps_with_console"]
    change = (statistics.median(on) - statistics.median(off)) / statistics.median(off) * 100
    spread = (max(off) - min(off)) / statistics.median(off) * 100 if len(off) > 1 else 0.0
    report.summary = {**load, **page, "rps_change_pct": change, "rps_spread_without_pct": spread}
    report.meta = {"requests": args.requests, "concurrency": args.concurrency, "rounds": args.rounds}
    if page:
        report.target("overview page weight", page["overview_total_bytes"] / 1024, 200, unit="KB",
                      higher_is_better=False)
    report.target("throughput change with a console open", abs(change), max(spread, 5.0), unit="%",
                  higher_is_better=False)
    return report


def show(report: Report) -> None:
    s = report.summary
    print(f"rps without console: {[round(v) for v in s['rps_without_console']]}")
    print(f"rps with console:    {[round(v) for v in s['rps_with_console']]} ({s['rps_change_pct']:+.1f}%, "
          f"spread without {s['rps_spread_without_pct']:.1f}%)")
    if "overview_total_bytes" in s:
        print(f"overview: {s['overview_total_bytes'] / 1024:.1f} KB in {s['overview_requests']} requests; "
              f"first contentful paint {s['first_contentful_paint_ms']} ms")
    report.print_targets()
