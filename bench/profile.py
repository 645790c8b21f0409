"""`python -m bench profile`: samples the Corral process with py-spy while wrk (or the
asyncio client) loads it, then prints where the time goes: the top functions by
inclusive and by own time, as shares of all samples. py-spy is a dev tool
(`pip install py-spy`), not a dependency of Corral."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, Report, cpu_sets, print_table
from bench.gateway import targets
from bench.load import run_load, wrk_path
from bench.stack import Stack


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--no-wrk", action="store_true", help="Use the asyncio load generator even if wrk exists.")
    parser.add_argument("--no-nginx", action="store_true", help="Use the built-in stub even if nginx exists.")
    parser.add_argument("--out", default=str(RESULTS_DIR))


def _frame(raw: str) -> str:
    # py-spy's collapsed frames look like "function (path/to/file.py:line)"
    name, _, where = raw.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{name}"


def summarise(collapsed: Path, top: int) -> tuple[int, list[dict[str, Any]]]:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [_frame(f) for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    rows = [{"function": f, "inclusive_pct": 100 * n / total, "own_pct": 100 * own[f] / total}
            for f, n in inclusive.most_common(top)]
    return total, rows


def run(args: argparse.Namespace) -> Report:
    # PATH, or beside this interpreter (a venv's python run by its path, not activated)
    pyspy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if pyspy is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    server_cpus, load_cpus = cpu_sets()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    collapsed = out / f"profile-{'stream' if args.stream else 'json'}.collapsed"
    report = Report(f"profile-{'stream' if args.stream else 'json'}")
    with Stack(server_cpus=server_cpus, load_cpus=load_cpus, prefer_nginx=not args.no_nginx) as stack:
        stack.start_stub()
        stack.start_corral()
        stack.passthrough_port = stack.stub_port  # unused here
        target = targets(stack, args.stream)["corral"]
        use_wrk = not args.no_wrk and wrk_path() is not None
        run_load(target, concurrency=args.concurrency, seconds=min(2.0, args.seconds), use_wrk=use_wrk, cpus=load_cpus)
        assert stack.corral is not None
        record = [pyspy, "record", "--pid", str(stack.corral.pid), "--duration", str(max(1, round(args.seconds))),
                  "--rate", "250", "--format", "raw", "--nonblocking", "--output", str(collapsed)]
        spy = subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        result: dict[str, Any] = {}

        def load() -> None:
            result.update(run_load(target, concurrency=args.concurrency, seconds=args.seconds, use_wrk=use_wrk,
                                   cpus=load_cpus))

        loader = threading.Thread(target=load)
        loader.start()
        loader.join()
        spy.wait(args.seconds + 30)
    total, rows = summarise(collapsed, args.top)
    report.meta = {"concurrency": args.concurrency, "stream": args.stream, "samples": total,
                   "collapsed": str(collapsed), "load": result}
    report.rows = rows
    return report


def show(report: Report) -> None:
    load = report.meta["load"]
    print(f"profile: c={report.meta['concurrency']} stream={report.meta['stream']} samples={report.meta['samples']} "
          f"rps under py-spy={load.get('rps', 0):.0f}")
    print_table(report.rows, [("inclusive_pct", "incl %", ".1f"), ("own_pct", "own %", ".1f"),
                              ("function", "function", "")])
    print(f"\ncollapsed stacks (for flamegraph.pl / speedscope): {report.meta['collapsed']}")
