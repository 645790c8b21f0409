"""`python -m bench startup`: seconds from exec of `corral serve` to `/readyz` 200,
median of N cold starts (the stub upstream stays up; provider verification is off,
since it would time the upstream, not Corral)."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from bench.common import RESULTS_DIR, Report, print_table
from bench.stack import Stack


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-nginx", action="store_true", help="Use the built-in stub even if nginx exists.")
    parser.add_argument("--out", default=str(RESULTS_DIR))


def import_seconds(module: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    return time.perf_counter() - started


def run(args: argparse.Namespace) -> Report:
    report = Report("startup")
    with Stack(prefer_nginx=not args.no_nginx) as stack:
        stack.start_stub()
        for n in range(args.runs):
            seconds = stack.start_corral()
            rss = 0
            if stack.corral is not None:
                from bench.common import rss_kb

                rss = rss_kb(stack.corral.pid)
            report.rows.append({"run": n + 1, "ready_s": seconds, "rss_mb": rss / 1024})
    ready = [r["ready_s"] for r in report.rows]
    report.summary = {
        "ready_median_s": statistics.median(ready), "ready_min_s": min(ready), "ready_max_s": max(ready),
        "python_bare_s": import_seconds("sys"), "import_app_s": import_seconds("corral.gateway.app"),
        "import_cli_s": import_seconds("corral.cli.main"),
    }
    report.target("ready after exec (median)", report.summary["ready_median_s"], 1.5, unit="s",
                  higher_is_better=False)
    return report


def show(report: Report) -> None:
    print_table(report.rows, [("run", "run", "d"), ("ready_s", "ready s", ".3f"), ("rss_mb", "RSS MB", ".1f")])
    s = report.summary
    print(f"\nmedian {s['ready_median_s']:.3f} s (min {s['ready_min_s']:.3f}, max {s['ready_max_s']:.3f}); "
          f"for scale: bare python {s['python_bare_s']:.3f} s, import corral.cli.main {s['import_cli_s']:.3f} s, "
          f"import corral.gateway.app {s['import_app_s']:.3f} s")
    report.print_targets()
