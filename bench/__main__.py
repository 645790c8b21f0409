"""`python -m bench <gateway|startup|soak|profile|clients|fleet|knowledge|console> [options]`."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

BENCHMARKS = {
    "gateway": "Corral vs a bare pass-through proxy vs the stub upstream (RPS, latency, TTFT).",
    "startup": "Seconds from `corral serve` exec to /readyz 200.",
    "soak": "RSS of the corral process before and after a bounded soak.",
    "profile": "py-spy profile of Corral under load: where the time goes.",
    "clients": "What the upstream HTTP client costs a bare Python proxy (httpx, Corral's wire, aiohttp).",
    "accesslog": "What one access-log line costs per call: logging.info against AccessLog (record + batched flush).",
    "console": "The web console: overview weight, first render in Chromium, gateway RPS with a console open.",
    "fleet": "Simulated nodes against a real `corral supervisor`: events/s stored, RSS per node, command RTT.",
    "knowledge": "Retrieval quality over docs/ (recall@5, MRR), embedded-store ingest, query p50/p99, memory.",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Corral benchmarks.")
    sub = parser.add_subparsers(dest="benchmark", required=True)
    for name, help_text in BENCHMARKS.items():
        module = importlib.import_module(f"bench.{name}")
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    module = importlib.import_module(f"bench.{args.benchmark}")
    report = module.run(args)
    out = Path(args.out)
    path = report.write(out)
    module.show(report)
    print(f"\nwrote {path}")
    if not getattr(args, "no_chart", False) and hasattr(module, "chart"):
        png = out / f"{args.benchmark}.png"
        module.chart(report, str(png))
        print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
