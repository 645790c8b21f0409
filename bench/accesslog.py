"""`python -m bench accesslog`: what one access-log line costs, per call, written the
two ways: `logging.info(..., extra=...)` through Corral's handler (what the gateway did
per call, on the request path), and `AccessLog.record` on the request path plus its
batched flush. Both write to the same kind of stream (a file on /dev/null: a real write
per batch or per line), in both formats. Single-threaded, no event loop: CPU per line."""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from bench.common import RESULTS_DIR, Report, print_table


def _fields(n: int) -> dict[str, Any]:
    return {"surface": "openai", "model": "bench", "status": 200, "duration_s": 0.0123456 + n * 1e-7, "stream": False,
            "deployment": "stub", "upstream_model": "gpt-bench", "attempts": 1, "input_tokens": 21,
            "output_tokens": 12, "error_type": None, "request_id": f"{n:032x}"}


def _best_of(rounds: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(rounds))


def measure(fmt: str, lines: int, rounds: int, batch: int) -> dict[str, Any]:
    from corral.telemetry.access_log import AccessLog
    from corral.telemetry.logging import make_handler

    sink = open(os.devnull, "w")  # noqa: SIM115  # closed below
    logger = logging.getLogger(f"corral.bench.access.{fmt}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = make_handler(fmt, sink)
    logger.addHandler(handler)
    calls = [_fields(n) for n in range(lines)]
    try:
        def stdlib() -> float:  # the gateway's former per-call line, verbatim
            started = time.perf_counter()
            for f in calls:
                tokens = (f["input_tokens"], f["output_tokens"])
                kind = f["error_type"]
                logger.info("%s model=%s status=%s %.3fs tokens=%s/%s%s", f["surface"], f["model"], f["status"],
                            f["duration_s"], tokens[0], tokens[1], f" error={kind}" if kind else "",
                            extra={k: v for k, v in f.items() if k != "request_id"} | {"request_id": f["request_id"]})
            return (time.perf_counter() - started) / lines

        access = AccessLog(logger=logger, capacity=lines + 1)

        def record_only() -> float:
            started = time.perf_counter()
            for f in calls:
                access.record(**f)
            elapsed = time.perf_counter() - started
            access.flush()  # outside the timing: this round measures the request path alone
            return elapsed / lines

        def record_and_flush() -> float:
            started = time.perf_counter()
            for start in range(0, lines, batch):
                for f in calls[start:start + batch]:
                    access.record(**f)
                access.flush()
            return (time.perf_counter() - started) / lines

        return {"format": fmt, "lines": lines, "batch": batch,
                "stdlib_us": 1e6 * _best_of(rounds, stdlib),
                "record_us": 1e6 * _best_of(rounds, record_only),
                "record_and_flush_us": 1e6 * _best_of(rounds, record_and_flush)}
    finally:
        logger.removeHandler(handler)
        sink.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lines", type=int, default=20_000, help="Lines per round (default 20000).")
    parser.add_argument("--rounds", type=int, default=5, help="Rounds, best kept (default 5).")
    parser.add_argument("--batch", type=int, default=250,
                        help="Lines per flush (default 250: 50 ms of 5,000 calls/s, the flusher's interval).")
    parser.add_argument("--out", default=str(RESULTS_DIR))


def run(args: argparse.Namespace) -> Report:
    report = Report("accesslog")
    report.meta = {"lines": args.lines, "rounds": args.rounds, "batch": args.batch}
    for fmt in ("console", "json"):
        row = measure(fmt, args.lines, args.rounds, args.batch)
        row["saved_us"] = row["stdlib_us"] - row["record_and_flush_us"]
        report.rows.append(row)
    return report


def show(report: Report) -> None:
    print(f"access log line cost, {report.meta['lines']} lines x {report.meta['rounds']} rounds (best), "
          f"flushed every {report.meta['batch']} lines")
    print_table(report.rows, [("format", "format", ""), ("stdlib_us", "logging.info us", ".2f"),
                              ("record_us", "record() us", ".3f"), ("record_and_flush_us", "record+flush us", ".2f"),
                              ("saved_us", "saved us/line", ".2f")])
