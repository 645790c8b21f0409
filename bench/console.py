"""`python -m bench console`: what the web console costs.

- the overview's weight (bytes the browser transferred: HTML, CSS, JS) and time to first
  contentful paint, in headless Chromium (Debian's chromium and chromium-driver);
- whether a console open on the overview moves the gateway: the `bench gateway` stack
  (`corral serve` pinned to its own CPU, the stub upstream), chat completions at one
  concurrency, in alternating rounds with the browser on ``about:blank`` and on the
  overview (signed in, following its live charts). Alternation puts drift in both arms.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from typing import Any

from bench.common import MASTER_KEY, RESULTS_DIR, Report, cpu_sets
from bench.load import Target, run_load, wrk_path
from bench.stack import Stack, corral_body

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=5.0, help="Seconds of load per round.")
    parser.add_argument("--rounds", type=int, default=4, help="Rounds per arm (alternating).")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-wrk", action="store_true", help="Use the asyncio load generator even if wrk exists.")
    parser.add_argument("--out", default=str(RESULTS_DIR))


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="corral-bench-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.corral_profile = profile
    return driver


PAGE_TIMING = """
const n = performance.getEntriesByType('navigation')[0];
const p = performance.getEntriesByName('first-contentful-paint')[0];
const r = performance.getEntriesByType('resource').filter(e => !e.name.includes('/live/'));
return {fcp: p ? p.startTime : null, html: n.encodedBodySize, assets: r.reduce((s, e) => s + e.encodedBodySize, 0),
        count: r.length};
"""


def _page(driver: Any, base: str, loads: int = 5) -> dict[str, Any]:
    driver.get(f"{base}/ui/login")
    driver.find_element("name", "secret").send_keys(MASTER_KEY)
    driver.find_element("css selector", "form button[type=submit]").click()
    timings = []
    for _ in range(loads):
        driver.get(f"{base}/ui/")
        time.sleep(0.3)
        timings.append(driver.execute_script(PAGE_TIMING))
    cold = timings[0]  # body bytes whether or not the browser had the stylesheet and script cached
    return {"overview_html_bytes": cold["html"], "overview_asset_bytes": cold["assets"],
            "overview_total_bytes": cold["html"] + cold["assets"], "overview_requests": 1 + cold["count"],
            "first_contentful_paint_ms": [round(t["fcp"], 1) for t in timings if t["fcp"] is not None]}


def run(args: argparse.Namespace) -> Report:
    report = Report("console")
    server_cpus, load_cpus = cpu_sets()
    use_wrk = not args.no_wrk and wrk_path() is not None
    with Stack(server_cpus=server_cpus, load_cpus=load_cpus, log_level="warning") as stack:
        stack.start_stub()
        stack.start_corral()
        base = f"http://127.0.0.1:{stack.corral_port}"
        target = Target("corral", stack.corral_port, "/v1/chat/completions", corral_body(False),
                        {"content-type": "application/json", "authorization": f"Bearer {MASTER_KEY}"})
        run_load(target, concurrency=args.concurrency, seconds=1.0, use_wrk=use_wrk, cpus=load_cpus)  # warm-up
        driver = _browser()
        try:
            page = _page(driver, base)
            off: list[float] = []
            on: list[float] = []
            for _ in range(args.rounds):
                driver.get("about:blank")
                time.sleep(0.5)
                off.append(run_load(target, concurrency=args.concurrency, seconds=args.seconds, use_wrk=use_wrk,
                                    cpus=load_cpus)["rps"])
                driver.get(f"{base}/ui/")  # the overview, following its live charts for the whole round
                time.sleep(0.5)
                on.append(run_load(target, concurrency=args.concurrency, seconds=args.seconds, use_wrk=use_wrk,
                                   cpus=load_cpus)["rps"])
            updated = driver.find_element("id", "charts").get_attribute("data-live-updated")
        finally:
            driver.quit()
            shutil.rmtree(driver.corral_profile, ignore_errors=True)
    change = (statistics.median(on) - statistics.median(off)) / statistics.median(off) * 100
    spread = (max(off) - min(off)) / statistics.median(off) * 100
    report.summary = {**page, "rps_without_console": off, "rps_with_console": on, "rps_change_pct": change,
                      "rps_spread_without_pct": spread, "console_live_updated": bool(updated)}
    report.meta = {"seconds_per_round": args.seconds, "rounds": args.rounds, "concurrency": args.concurrency,
                   "pinning": {"server": server_cpus, "load": load_cpus},
                   "load_generator": "wrk" if use_wrk else "asyncio (built-in)"}
    report.target("overview page weight", page["overview_total_bytes"] / 1024, 200, unit="KB",
                  higher_is_better=False)
    report.target("RPS change with a console open, within the rounds' own spread", abs(change), max(spread, 2.0),
                  unit="%", higher_is_better=False)
    return report


def show(report: Report) -> None:
    s = report.summary
    print(f"overview: {s['overview_total_bytes'] / 1024:.1f} KB transferred in {s['overview_requests']} requests; "
          f"first contentful paint {s['first_contentful_paint_ms']} ms")
    print(f"rps without console: {[round(v) for v in s['rps_without_console']]}")
    print(f"rps with console:    {[round(v) for v in s['rps_with_console']]}  median {s['rps_change_pct']:+.1f}% "
          f"(rounds without vary by {s['rps_spread_without_pct']:.1f}%)")
    report.print_targets()
