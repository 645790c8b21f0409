"""`python -m bench clients`: what the upstream HTTP client costs a Python proxy.

The same raw ASGI proxy on uvicorn (`bench/clients_app.py`), pinned to one CPU, with
each way of calling the stub upstream: none (uvicorn answering itself: the server
alone), httpx's own client and transport, Corral's wire called the way the provider
client calls it (its only send path), and aiohttp when it is installed.
Non-stream, wrk at c=1 and c=16; RPS, p50 and the server's CPU per request.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import Any

from bench.common import RESULTS_DIR, Report, cpu_seconds, cpu_sets, free_port, print_table, spawn, wait_http
from bench.load import Target, run_load, wrk_path
from bench.stack import Stack, upstream_body


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2, help="Rounds per point, best kept.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--no-wrk", action="store_true", help="Use the asyncio load generator even if wrk exists.")
    parser.add_argument("--no-nginx", action="store_true", help="Use the built-in stub even if nginx exists.")
    parser.add_argument("--out", default=str(RESULTS_DIR))


def run(args: argparse.Namespace) -> Report:
    server_cpus, load_cpus = cpu_sets()
    use_wrk = not args.no_wrk and wrk_path() is not None
    clients = ["none", "httpx", "wire"]
    if importlib.util.find_spec("aiohttp") is not None:
        clients.append("aiohttp")
    report = Report("clients")
    report.meta = {"clients": clients, "seconds_per_point": args.seconds, "rounds": args.rounds}
    with Stack(server_cpus=server_cpus, load_cpus=load_cpus, prefer_nginx=not args.no_nginx) as stack:
        stack.start_stub()
        children = {}
        for name in clients:
            port = free_port()
            child = spawn(f"client-{name}", [sys.executable, "-m", "bench.clients_app", "--client", name,
                                             "--port", str(port), "--upstream-port", str(stack.stub_port)],
                          log_dir=stack.work, cpus=server_cpus)
            stack.children.append(child)
            children[name] = (child, port)
        body = upstream_body(False)
        for child, port in children.values():  # every app answers /health (the stub's, or its own)
            wait_http(f"http://127.0.0.1:{port}/health", child, timeout=30)
        targets = {name: Target(name, port, "/v1/chat/completions", body, {"content-type": "application/json"})
                   for name, (_, port) in children.items()}
        for target in targets.values():  # warm up
            run_load(target, concurrency=4, seconds=1.0, use_wrk=use_wrk, cpus=load_cpus)
        for c in args.concurrency:
            best: dict[str, dict[str, Any]] = {}
            for _ in range(args.rounds):
                for name, target in targets.items():
                    pid = children[name][0].pid
                    before = cpu_seconds(pid)
                    result = run_load(target, concurrency=c, seconds=args.seconds, use_wrk=use_wrk, cpus=load_cpus)
                    result["cpu_us_per_request"] = (cpu_seconds(pid) - before) / max(result["requests"], 1) * 1e6
                    if name not in best or result["rps"] > best[name]["rps"]:
                        best[name] = result
            for name, result in best.items():
                report.rows.append({"client": name, "c": c, "rps": result["rps"], "p50_ms": result["p50_ms"],
                                    "p99_ms": result["p99_ms"], "cpu_us": result["cpu_us_per_request"],
                                    "errors": result["errors"]})
    return report


def show(report: Report) -> None:
    print_table(report.rows, [("client", "client", ""), ("c", "c", "d"), ("rps", "RPS", ".0f"),
                              ("p50_ms", "p50 ms", ".3f"), ("p99_ms", "p99 ms", ".3f"),
                              ("cpu_us", "server CPU µs/req", ".0f"), ("errors", "errors", "d")])
