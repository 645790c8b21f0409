"""`python -m bench soak --requests N`: RSS of the corral process before and after N
requests (after a warm-up), with usage recording and agent sessions on. Traffic
cycles through three kinds of request in bounded chunks: non-stream, stream, and an
agent (`helper`) with a new session id per request, so session rows grow too.
1M requests: `python -m bench soak --requests 1000000` (13–25 minutes on the 2 vCPUs measured)."""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from bench.common import MASTER_KEY, RESULTS_DIR, Report, cpu_sets, print_table, rss_kb
from bench.load import Target, run_load, wrk_path
from bench.stack import Stack, corral_body

KINDS = ("json", "stream", "agent")

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--warmup", type=int, default=10_000, help="Requests before the first RSS reading.")
    parser.add_argument("--chunk-seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-wrk", action="store_true", help="Use the asyncio load generator even if wrk exists.")
    parser.add_argument("--no-nginx", action="store_true", help="Use the built-in stub even if nginx exists.")
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument("--out", default=str(RESULTS_DIR))


def target(stack: Stack, kind: str) -> Target:
    headers = {"content-type": "application/json", "authorization": f"Bearer {MASTER_KEY}"}
    body = corral_body(kind == "stream", model="helper" if kind == "agent" else None)
    return Target(kind, stack.corral_port, "/v1/chat/completions", body, headers, fresh_session=kind == "agent")


def run(args: argparse.Namespace) -> Report:
    server_cpus, load_cpus = cpu_sets()
    use_wrk = not args.no_wrk and wrk_path() is not None
    report = Report("soak")
    sent = {k: 0 for k in KINDS}
    errors = 0
    with Stack(server_cpus=server_cpus, load_cpus=load_cpus, agent=True, prefer_nginx=not args.no_nginx) as stack:
        stack.start_stub()
        stack.start_corral()
        assert stack.corral is not None
        pid = stack.corral.pid
        targets = {k: target(stack, k) for k in KINDS}
        total, n, base_total = 0, 0, 0
        before: int | None = None
        started = time.monotonic()
        while before is None or total - base_total < args.requests:
            kind = KINDS[n % len(KINDS)]
            n += 1
            result = run_load(targets[kind], concurrency=args.concurrency, seconds=args.chunk_seconds,
                              use_wrk=use_wrk, cpus=load_cpus)
            total += result["requests"]
            sent[kind] += result["requests"]
            errors += result["errors"]
            rss = rss_kb(pid)
            # The warm-up ends with a whole cycle of kinds: every path has run (and made what it
            # keeps for good: imports, pools, caches) before the reading growth is measured from.
            if before is None and total >= args.warmup and n % len(KINDS) == 0:
                before, base_total = rss, total
            report.rows.append({"chunk": n, "kind": kind, "requests_total": total, "rss_mb": rss / 1024,
                                "rps": result["rps"], "elapsed_s": time.monotonic() - started})
        after = rss_kb(pid)
        stack.corral.stop(timeout=60)  # graceful: the batch writer flushes what is queued
        stored = stack.usage_rows()
    growth = 100 * (after - (before or after)) / (before or after)
    report.summary = {"requests": total, "sent": sent, "errors": errors, "rss_before_mb": (before or 0) / 1024,
                      "rss_after_mb": after / 1024, "growth_pct": growth, "store_rows": stored,
                      **trend(report.rows, base_total)}
    report.meta = {"load_generator": "wrk" if use_wrk else "asyncio", "concurrency": args.concurrency,
                   "warmup": args.warmup, "warmup_requests": base_total, "chunk_seconds": args.chunk_seconds,
                   "features": "master key auth, metrics, usage recording (SQLite), agent sessions (SQLite)"}
    report.target("RSS growth over the soak", growth, 10.0, unit="%", higher_is_better=False)
    return report


def trend(rows: list[dict[str, Any]], warmup: int) -> dict[str, float]:
    """RSS swings by several MB between two readings (allocator arenas, GC timing), so
    one reading against another is noisy: also compare the median of the first and the
    last five readings after the warm-up, and give the peak."""
    samples = [r["rss_mb"] for r in rows if r["requests_total"] >= warmup]
    if len(samples) < 2:
        return {}
    first, last = statistics.median(samples[:5]), statistics.median(samples[-5:])
    return {"rss_peak_mb": max(samples), "rss_first5_median_mb": first, "rss_last5_median_mb": last,
            "growth_median_pct": 100 * (last - first) / first}


def show(report: Report) -> None:
    rows = report.rows if len(report.rows) <= 24 else report.rows[:: max(1, len(report.rows) // 24)] + report.rows[-1:]
    print_table(rows, [("chunk", "chunk", "d"), ("kind", "kind", ""), ("requests_total", "requests", "d"),
                       ("rps", "rps", ".0f"), ("rss_mb", "RSS MB", ".1f")])
    s = report.summary
    print(f"\n{s['requests']} requests ({s['sent']}), {s['errors']} errors; RSS {s['rss_before_mb']:.1f} MB after "
          f"warm-up -> {s['rss_after_mb']:.1f} MB: {s['growth_pct']:+.1f}%")
    if "growth_median_pct" in s:
        print(f"median of the first/last five readings: {s['rss_first5_median_mb']:.1f} -> "
              f"{s['rss_last5_median_mb']:.1f} MB ({s['growth_median_pct']:+.1f}%), peak {s['rss_peak_mb']:.1f} MB")
    print(f"store rows after shutdown: {s['store_rows']}")
    report.print_targets()


def chart(report: Report, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot([r["requests_total"] for r in report.rows], [r["rss_mb"] for r in report.rows], marker=".")
    ax.set_xlabel("requests served")
    ax.set_ylabel("corral RSS (MB)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_title(f"RSS over the soak: {report.summary['growth_pct']:+.1f}% after warm-up")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
