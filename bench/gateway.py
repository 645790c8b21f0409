"""`python -m bench gateway`: Corral against the bare pass-through proxy and the
stub itself, non-stream and stream, at several concurrencies."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from bench.common import MASTER_KEY, RESULTS_DIR, Report, cpu_seconds, cpu_sets, print_table, tool_version
from bench.load import Target, measure_sequential, run_load, wrk_path
from bench.stack import Stack, corral_body, upstream_body
from bench.stub import STREAM_PREFIX

TARGETS = ("direct", "passthrough", "httpx-proxy", "aiohttp-proxy", "baseline", "corral")


def targets(stack: Stack, stream: bool) -> dict[str, Target]:
    json_headers = {"content-type": "application/json"}
    path = f"{STREAM_PREFIX}/v1/chat/completions" if stream else "/v1/chat/completions"
    found = {
        "direct": Target("direct", stack.stub_port, path, upstream_body(stream), json_headers),
        "passthrough": Target("passthrough", stack.passthrough_port, path, upstream_body(stream), json_headers),
        "corral": Target("corral", stack.corral_port, "/v1/chat/completions", corral_body(stream),
                         {**json_headers, "authorization": f"Bearer {MASTER_KEY}"}),
    }
    if stack.httpx_proxy_port:
        found["httpx-proxy"] = Target("httpx-proxy", stack.httpx_proxy_port, path, upstream_body(stream), json_headers)
    if stack.aiohttp_proxy_port:
        found["aiohttp-proxy"] = Target("aiohttp-proxy", stack.aiohttp_proxy_port, path, upstream_body(stream),
                                        json_headers)
    if stack.baseline_port:
        found["baseline"] = Target("baseline", stack.baseline_port, "/v1/chat/completions", corral_body(stream),
                                   {**json_headers, "authorization": f"Bearer {MASTER_KEY}"})
    for name, port in stack.traced_ports.items():
        found[name] = Target(name, port, "/v1/chat/completions", corral_body(stream),
                             {**json_headers, "authorization": f"Bearer {MASTER_KEY}"})
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="1 s per point, fewer TTFT samples (a smoke run).")
    parser.add_argument("--seconds", type=float, help="Seconds per point (default 5, or 1 with --quick).")
    parser.add_argument("--rounds", type=int, help="Rounds per point, best kept (default 3, or 1 with --quick).")
    parser.add_argument("--samples", type=int,
                        help="Sequential samples per target (default 1000, or 100 with --quick).")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--no-wrk", action="store_true", help="Use the asyncio load generator even if wrk exists.")
    parser.add_argument("--no-nginx", action="store_true", help="Use the built-in stub even if nginx exists.")
    parser.add_argument("--no-pin", action="store_true", help="Do not pin the server under test to its own CPU.")
    parser.add_argument("--baseline-src", help="Also run a Corral from this source tree (the directory holding "
                        "the `corral` package) as target `baseline`: an A/B of a change under the same load.")
    parser.add_argument("--spool-ab", action="store_true",
                        help="Also run this Corral with the usage spool off (`billing.spool: false`) as target "
                        "`baseline`: what the durable usage path costs.")
    parser.add_argument("--no-httpx-proxy", action="store_true",
                        help="Leave out the idiomatic httpx pass-through (target `httpx-proxy`, for scale).")
    parser.add_argument("--no-aiohttp-proxy", action="store_true",
                        help="Leave out the bare Starlette + aiohttp pass-through (target `aiohttp-proxy`).")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="Corral's observability.log_level (default info, Corral's own default: the "
                        "access log is on).")
    parser.add_argument("--tracing", type=float, nargs="*", default=[], metavar="RATE",
                        help="Also run Corral with tracing on, exporting over OTLP/HTTP to a loopback sink, once "
                        "per sampling rate (targets `traced-<rate>`), e.g. --tracing 1 0.1.")
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument("--out", default=str(RESULTS_DIR), help="Where to write gateway.json and gateway.png.")


def run(args: argparse.Namespace) -> Report:
    seconds = args.seconds or (1.0 if args.quick else 5.0)
    ttft_count = args.samples or (100 if args.quick else 1000)
    rounds = args.rounds or (1 if args.quick else 3)
    server_cpus, load_cpus = (None, None) if args.no_pin else cpu_sets()
    use_wrk = not args.no_wrk and wrk_path() is not None
    report = Report("gateway")
    with Stack(server_cpus=server_cpus, load_cpus=load_cpus, prefer_nginx=not args.no_nginx,
               log_level=args.log_level) as stack:
        stack.start_stub()
        stack.start_passthrough()
        if not args.no_httpx_proxy:
            stack.start_passthrough("httpx")
        if not args.no_aiohttp_proxy:
            stack.start_passthrough("aiohttp")
        ready = stack.start_corral()
        if args.baseline_src:
            stack.start_baseline(args.baseline_src)
        elif args.spool_ab:
            stack.start_baseline(None, "billing:\n  spool: false\n")
        baseline = bool(args.baseline_src or args.spool_ab)
        traced = [stack.start_traced(rate) for rate in args.tracing]
        names = [n for n in TARGETS if (n != "baseline" or baseline)
                 and (n != "httpx-proxy" or not args.no_httpx_proxy)
                 and (n != "aiohttp-proxy" or not args.no_aiohttp_proxy)] + traced
        report.meta = {
            "seconds_per_point": seconds, "concurrency": args.concurrency,
            "load_generator": tool_version(["wrk", "--version"]) if use_wrk else "asyncio (built-in)",
            "stub": stack.stub_kind, "pinning": {"server": server_cpus, "load_and_stub": load_cpus},
            "rounds": rounds, "loadavg_before": os.getloadavg(),
            "corral_ready_seconds": round(ready, 3), "corral_features": stack.corral_features(),
            "corral_log_level": args.log_level,
        }
        pids = stack.pids()
        for stream in (False, True):
            points = targets(stack, stream)
            for target in points.values():  # warm up: connection pools, caches, lazy imports
                run_load(target, concurrency=16, seconds=min(1.0, seconds), use_wrk=use_wrk, cpus=load_cpus)
            mode = "stream" if stream else "json"
            for c in args.concurrency:
                best: dict[str, dict[str, Any]] = {}
                for round_n in range(rounds):  # targets interleaved, best round kept: noise only ever slows
                    for name in names:
                        cpu_before = cpu_seconds(pids[name])
                        result = run_load(points[name], concurrency=c, seconds=seconds, use_wrk=use_wrk,
                                          cpus=load_cpus)
                        cpu = cpu_seconds(pids[name]) - cpu_before
                        result["server_cpu_us_per_req"] = 1e6 * cpu / result["requests"] if result["requests"] else None
                        result["rounds_rps"] = [*best.get(name, {}).get("rounds_rps", []), round(result["rps"])]
                        if name not in best or result["rps"] > best[name]["rps"]:
                            best[name] = {**result, "round": round_n}
                        else:
                            best[name]["rounds_rps"] = result["rounds_rps"]
                        time.sleep(0.1)
                report.rows += [{"mode": mode, "concurrency": c, "target": n, **best[n]} for n in names]
            seq = measure_sequential(list(points.values()), count=ttft_count, marker=b"data:" if stream else b"{")
            report.summary.setdefault("sequential", {})["stream" if stream else "json"] = seq
        report.meta["corral_store_rows"] = stack.usage_rows()
        if traced:
            report.meta["otlp_sink"] = stack.otlp_exports()
        report.meta["baseline"] = ("usage spool off" if args.spool_ab and not args.baseline_src
                                   else args.baseline_src)
        report.meta["loadavg_after"] = os.getloadavg()
    summarise(report)
    return report


def _row(report: Report, mode: str, c: int, target: str) -> dict[str, Any] | None:
    for row in report.rows:
        if (row["mode"], row["concurrency"], row["target"]) == (mode, c, target):
            return row
    return None


def summarise(report: Report) -> None:
    for row in report.rows:
        direct = _row(report, row["mode"], row["concurrency"], "direct")
        floor = _row(report, row["mode"], row["concurrency"], "passthrough")
        if direct is not None:
            row["overhead_p50_ms"] = row["p50_ms"] - direct["p50_ms"]
            row["overhead_p99_ms"] = row["p99_ms"] - direct["p99_ms"]
        for reference, key in (("passthrough", "vs_passthrough"), ("httpx-proxy", "vs_httpx_proxy"),
                               ("aiohttp-proxy", "vs_aiohttp_proxy")):
            other = _row(report, row["mode"], row["concurrency"], reference)
            if other is not None and other["rps"]:
                row[key] = row["rps"] / other["rps"]
        base = _row(report, row["mode"], row["concurrency"], "baseline")
        if (base is not None and row["target"] == "corral" and base["rps"] and base.get("server_cpu_us_per_req")
                and row.get("server_cpu_us_per_req")):  # 0: under the clock's tick in a short run
            row["vs_baseline"] = row["rps"] / base["rps"]
            row["cpu_vs_baseline"] = base["server_cpu_us_per_req"] / row["server_cpu_us_per_req"]
        if floor is not None and floor.get("server_cpu_us_per_req") and row.get("server_cpu_us_per_req"):
            # capacity on a core of its own, relative to the floor: what contention cannot skew
            row["cpu_vs_passthrough"] = floor["server_cpu_us_per_req"] / row["server_cpu_us_per_req"]
    _tracing_cost(report)
    seq = report.summary.get("sequential", {})
    stream_seq = seq.get("stream", {})
    if "corral" in stream_seq and "direct" in stream_seq:
        report.summary["ttft_overhead_ms"] = stream_seq["corral"]["ttft_p50_ms"] - stream_seq["direct"]["ttft_p50_ms"]
        report.summary["passthrough_ttft_overhead_ms"] = (stream_seq["passthrough"]["ttft_p50_ms"]
                                                          - stream_seq["direct"]["ttft_p50_ms"])
    c16 = _row(report, "json", 16, "corral")
    c1 = _row(report, "json", 1, "corral")
    report.target("Corral / pass-through RPS, c=16, non-stream", c16.get("vs_passthrough") if c16 else None,
                  0.70, unit="x", higher_is_better=True)
    s16 = _row(report, "stream", 16, "corral")
    if s16 is not None:
        report.summary["stream_c16_vs_passthrough"] = s16.get("vs_passthrough")
    # What Corral's features and core add to the floor, per request, in server CPU: the
    # figure a target restated as "costs at most N µs over the floor" would read.
    for mode, point in (("json", c16), ("stream", s16)):
        floor16 = _row(report, mode, 16, "passthrough")
        if point is not None and floor16 is not None and point.get("server_cpu_us_per_req") \
                and floor16.get("server_cpu_us_per_req"):
            report.summary[f"{mode}_c16_added_cpu_us"] = (point["server_cpu_us_per_req"]
                                                          - floor16["server_cpu_us_per_req"])
    _reference_ratios(report, c16, s16)
    if report.meta.get("baseline") == "usage spool off":
        _durable_usage_cost(report)
    report.target("overhead over direct p50, c=1, non-stream", c1.get("overhead_p50_ms") if c1 else None,
                  0.5, unit="ms", higher_is_better=False)
    report.target("stream TTFT overhead over direct (p50, sequential)", report.summary.get("ttft_overhead_ms"),
                  1.0, unit="ms", higher_is_better=False)



def _reference_ratios(report: Report, c16: dict[str, Any] | None, s16: dict[str, Any] | None) -> None:
    # For scale, not a target: Corral against the proxy the stack's documentation would give.
    # And Corral as configured (at its defaults: log level info, metrics on) against a bare
    # Starlette + aiohttp pass-through: the ratio the default-config target is stated in.
    for mode, point in (("json", c16), ("stream", s16)):
        for key in ("vs_httpx_proxy", "vs_aiohttp_proxy"):
            if point is not None and point.get(key) is not None:
                report.summary[f"{mode}_c16_{key}"] = point[key]
    if c16 is not None and c16.get("vs_aiohttp_proxy") is not None:
        report.target("Corral (default config) / Starlette + aiohttp pass-through RPS, c=16, non-stream",
                      c16["vs_aiohttp_proxy"], 0.70, unit="x", higher_is_better=True)


def _tracing_cost(report: Report) -> None:
    """Each traced Corral against the untraced one under the same load: RPS ratio and the
    server CPU tracing adds per request (the cost per request of tracing at that rate)."""
    costs: dict[str, dict[str, Any]] = {}
    for row in report.rows:
        if not row["target"].startswith("traced-"):
            continue
        plain = _row(report, row["mode"], row["concurrency"], "corral")
        if plain is None:
            continue
        if plain["rps"]:
            row["vs_untraced"] = row["rps"] / plain["rps"]
        if row.get("server_cpu_us_per_req") and plain.get("server_cpu_us_per_req"):
            row["tracing_cpu_us"] = row["server_cpu_us_per_req"] - plain["server_cpu_us_per_req"]
        if row["concurrency"] == 16:
            costs[f"{row['mode']} {row['target']}"] = {"rps_vs_untraced": row.get("vs_untraced"),
                                                       "added_cpu_us_per_req": row.get("tracing_cpu_us")}
    if costs:
        report.summary["tracing_c16"] = costs


def _durable_usage_cost(report: Report) -> None:
    """With `--spool-ab` the baseline is this Corral with the usage spool off."""
    for mode in ("json", "stream"):
        point = _row(report, mode, 16, "corral")
        if point is not None and point.get("vs_baseline"):
            report.summary[f"{mode}_c16_durable_usage_cost"] = 1 - point["vs_baseline"]
    report.target("durable usage path: RPS lost at c=16, non-stream",
                  report.summary.get("json_c16_durable_usage_cost"), 0.10, unit="x", higher_is_better=False)


def show(report: Report) -> None:
    meta = report.meta
    print(f"gateway benchmark: stub={meta['stub']} load={meta['load_generator']} "
          f"{meta['seconds_per_point']:g}s/point pinning={meta['pinning']}")
    print(f"corral features: {meta['corral_features']} log level: {meta.get('corral_log_level', 'warning')}")
    print(f"load average before/after: {meta['loadavg_before']} / {meta['loadavg_after']} (others' work skews results)")
    print_table(report.rows, [("mode", "mode", ""), ("concurrency", "c", "d"), ("target", "target", ""),
                              ("rps", "rps", ".0f"), ("p50_ms", "p50 ms", ".3f"), ("p99_ms", "p99 ms", ".3f"),
                              ("overhead_p50_ms", "+p50 ms", ".3f"), ("overhead_p99_ms", "+p99 ms", ".3f"),
                              ("vs_passthrough", "/floor", ".2f"), ("server_cpu_us_per_req", "cpu us/req", ".0f"),
                              ("cpu_vs_passthrough", "/floor cpu", ".2f"), ("errors", "errors", "d")]
                + ([("vs_httpx_proxy", "/httpx", ".2f")] if any(r["target"] == "httpx-proxy" for r in report.rows)
                   else [])
                + ([("vs_aiohttp_proxy", "/aiohttp", ".2f")]
                   if any(r["target"] == "aiohttp-proxy" for r in report.rows) else [])
                + ([("vs_baseline", "/baseline", ".2f"), ("cpu_vs_baseline", "/baseline cpu", ".2f")]
                   if any(r["target"] == "baseline" for r in report.rows) else [])
                + ([("vs_untraced", "/untraced", ".2f"), ("tracing_cpu_us", "+trace us", ".0f")]
                   if any(r["target"].startswith("traced-") for r in report.rows) else []))
    seq = report.summary.get("sequential", {})
    print("\nsequential (c=1, one connection): time to first byte of the body / first SSE event")
    rows = [{"mode": mode, "target": name, **vals} for mode, per in seq.items() for name, vals in per.items()]
    print_table(rows, [("mode", "mode", ""), ("target", "target", ""), ("ttft_p50_ms", "p50 ms", ".3f"),
                       ("ttft_p99_ms", "p99 ms", ".3f"), ("reported_overhead_p50_ms", "x-corral-overhead-ms", ".3f")])
    for mode in ("json", "stream"):
        added = report.summary.get(f"{mode}_c16_added_cpu_us")
        if added is not None:
            print(f"Corral's server CPU over the floor's per request, c=16, {mode}: {added:.0f} us")
    for point, cost in report.summary.get("tracing_c16", {}).items():
        added, ratio = cost["added_cpu_us_per_req"], cost["rps_vs_untraced"]
        print(f"tracing, c=16, {point}: " + (f"{added:+.0f} us server CPU per request, " if added is not None else "")
              + (f"RPS {ratio:.2f} x untraced" if ratio is not None else ""))
    for mode in ("json", "stream"):
        cost = report.summary.get(f"{mode}_c16_durable_usage_cost")
        if cost is not None:
            print(f"the durable usage path (spool) costs {cost:.1%} of RPS at c=16, {mode}")
    for mode in ("json", "stream"):
        ratio = report.summary.get(f"{mode}_c16_vs_httpx_proxy")
        if ratio is not None:
            print(f"for scale: Corral / idiomatic httpx pass-through RPS, c=16, {mode}: {ratio:.2f} x")
    for mode in ("json", "stream"):
        ratio = report.summary.get(f"{mode}_c16_vs_aiohttp_proxy")
        if ratio is not None:
            print(f"Corral (log level {report.meta.get('corral_log_level')}) / bare Starlette + aiohttp "
                  f"pass-through RPS, c=16, {mode}: {ratio:.2f} x")
    report.print_targets()


def chart(report: Report, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = (("rps", "requests/s"), ("p50_ms", "p50 latency (ms)"),
               ("server_cpu_us_per_req", "server CPU us/request"))
    fig, axes = plt.subplots(len(metrics), 2, figsize=(10, 9))
    colours = {"direct": "#999999", "passthrough": "#4c72b0", "httpx-proxy": "#8fb0d8", "aiohttp-proxy": "#55a868",
               "baseline": "#c4ad66", "corral": "#dd8452"}
    names = [n for n in TARGETS if any(r["target"] == n for r in report.rows)]
    names += sorted({r["target"] for r in report.rows if r["target"].startswith("traced-")})
    concurrencies = sorted({r["concurrency"] for r in report.rows})
    for col, mode in enumerate(("json", "stream")):
        for row_n, (metric, label) in enumerate(metrics):
            ax = axes[row_n][col]
            width = 0.8 / len(names)
            for n, name in enumerate(names):
                values = [(_row(report, mode, c, name) or {}).get(metric) or 0 for c in concurrencies]
                xs = [i + (n - (len(names) - 1) / 2) * width for i in range(len(concurrencies))]
                ax.bar(xs, values, width, label=name, color=colours.get(name, "#55a868"))
            ax.set_xticks(range(len(concurrencies)), [f"c={c}" for c in concurrencies])
            ax.set_yscale("log")  # the stub is two orders of magnitude faster than any Python server
            ax.set_ylabel(label)
            ax.set_title(f"{'non-stream' if mode == 'json' else 'stream'}: {label}")
            ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend()
    fig.suptitle("Corral vs bare pass-through vs direct (stub upstream)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
