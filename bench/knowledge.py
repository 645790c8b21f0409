"""`python -m bench knowledge`: retrieval quality over the project's own docs/, and the
embedded store's ingest rate, query latency and memory at 10k and 100k chunks.

Quality: a fixed set of questions, each with the docs/ file that answers it; recall@5
(the file is among the first five passages) and MRR (1 / rank of its first passage, top
10) for keyword (BM25), vector and hybrid (reciprocal rank fusion), with the offline
embedder (hashed words and character trigrams: no model, no download). A model embedder
would change the vector column; run with `--embedder-model ALIAS --config corral.yaml`
to measure one.

Scale: synthetic chunks (Zipf-distributed words from a fixed vocabulary, seeded),
added through the same path as `POST /v1/knowledge/{name}/documents` in batches; each
size runs in a fresh process so its RSS is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, Report, percentile, print_table

ROOT = Path(__file__).resolve().parents[1]

# (question, the docs/ file that answers it)
QUESTIONS: list[tuple[str, str]] = [
    ("how do I give an agent a tool that needs approval before it runs", "agents.md"),
    ("resume a paused run after a human approves the tool call", "agents.md"),
    ("serve an agent to other agents over the A2A protocol", "agents.md"),
    ("which header reports the time the gateway itself added to a response", "api.md"),
    ("does corral support the anthropic messages endpoint", "api.md"),
    ("token ids as input to the embeddings endpoint", "api.md"),
    ("layers of the code and which may import which", "architecture.md"),
    ("what happens to streams in flight when the server shuts down", "architecture.md"),
    ("create a virtual key with a budget through the admin API", "auth.md"),
    ("validate JWT bearer tokens against a JWKS url", "auth.md"),
    ("listen on a public interface without authentication", "auth.md"),
    ("point the OpenCode coding agent at corral", "clients.md"),
    ("default values for environment variables inside the yaml file", "configuration.md"),
    ("run corral with no config file at all", "configuration.md"),
    ("install corral as a systemd service on linux", "deployment.md"),
    ("kubernetes manifests with a horizontal pod autoscaler", "deployment.md"),
    ("back up and restore the sqlite database", "deployment.md"),
    ("how does a node reconnect to the supervisor without losing events", "fleet-protocol.md"),
    ("heartbeat interval and when a node is considered dead", "fleet-protocol.md"),
    ("policy that stops a session costing too much money", "fleet.md"),
    ("send alerts to slack when something happens in the fleet", "fleet.md"),
    ("requests per minute limit shared by several replicas through redis", "limits.md"),
    ("report spend grouped by day or by model", "limits.md"),
    ("prometheus metrics endpoint and histogram names", "observability.md"),
    ("export traces with opentelemetry otlp", "observability.md"),
    ("bring up postgres and redis in dependency order before the server", "operations.md"),
    ("override a service host with an SVC_ environment variable", "operations.md"),
    ("requests per second compared with a bare proxy", "performance.md"),
    ("price per million input tokens for a model that is not built in", "pricing.md"),
    ("use groq or deepseek through the openai compatible preset", "providers.md"),
    ("fallback to another model when the first one is rate limited", "routing.md"),
    ("cooldown of a deployment after consecutive failures", "routing.md"),
    ("alembic migrations and schema upgrades", "store.md"),
    ("usage records written in batches off the request path", "store.md"),
    ("connect an MCP server over stdio as a toolset", "tools.md"),
    ("allowlist of commands for the shell tool", "tools.md"),
    ("check provider keys at startup and report which ones fail", "verification.md"),
]
MODES = ("keyword", "vector", "hybrid")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="Chunks per scale run.")
    parser.add_argument("--queries", type=int, default=200, help="Timed queries per mode and size.")
    parser.add_argument("--dimensions", type=int, default=256, help="Offline embedder dimensions.")
    parser.add_argument("--quick", action="store_true", help="Smoke run: 500 and 2000 chunks, 20 queries.")
    parser.add_argument("--out", default=str(RESULTS_DIR))


def run(args: argparse.Namespace) -> Report:
    if args.quick:
        args.sizes, args.queries = [500, 2000], 20
    report = Report("knowledge")
    report.meta["embedder"] = f"offline-hash-v2/{args.dimensions}"
    report.meta["questions"] = len(QUESTIONS)
    report.meta["load_average_at_start"] = os.getloadavg()  # other work on the machine skews latencies
    quality = asyncio.run(_quality(args.dimensions))
    report.summary["quality"] = quality
    context = multiprocessing.get_context("spawn")  # a fresh interpreter per size: RSS of that size alone
    for size in args.sizes:
        with context.Pool(1) as pool:
            row: dict[str, Any] = pool.apply(_scale_worker, (size, args.queries, args.dimensions))
        report.rows.append(row)
    best = max(quality[m]["recall_at_5"] for m in ("keyword", "vector"))
    report.target("hybrid recall@5 >= best single mode", quality["hybrid"]["recall_at_5"], best, unit="",
                  higher_is_better=True)
    best_mrr = max(quality[m]["mrr"] for m in ("keyword", "vector"))
    report.target("hybrid MRR >= best single mode", quality["hybrid"]["mrr"], best_mrr, unit="",
                  higher_is_better=True)
    return report


async def _quality(dimensions: int) -> dict[str, dict[str, float]]:
    from corral.config.knowledge import KnowledgeBaseConfig
    from corral.knowledge import KnowledgeService

    config = KnowledgeBaseConfig.model_validate(
        {"sources": ["docs/**/*.md"], "embedder": {"type": "offline", "dimensions": dimensions}})
    with tempfile.TemporaryDirectory() as data:
        service = KnowledgeService.from_config({"docs": config}, root=ROOT, data_dir=Path(data), router=None)
        try:
            await service.ingest("docs")
            out: dict[str, dict[str, float]] = {}
            for mode in MODES:
                found, reciprocal = 0, 0.0
                for question, expected in QUESTIONS:
                    hits = await service.query("docs", question, top_k=10, mode=mode)
                    sources = [Path(h.source).name for h in hits]
                    found += expected in sources[:5]
                    reciprocal += 1 / (sources.index(expected) + 1) if expected in sources else 0.0
                out[mode] = {"recall_at_5": found / len(QUESTIONS), "mrr": reciprocal / len(QUESTIONS)}
            return out
        finally:
            await service.aclose()


def _vocabulary(rng: random.Random, size: int = 20_000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 10))) for _ in range(size)]


def _scale_worker(size: int, queries: int, dimensions: int) -> dict[str, Any]:
    return asyncio.run(_scale(size, queries, dimensions))


async def _scale(size: int, queries: int, dimensions: int) -> dict[str, Any]:
    from bench.common import rss_kb
    from corral.config.knowledge import KnowledgeBaseConfig
    from corral.knowledge import KnowledgeService, NewDocument

    rng = random.Random(size)
    vocabulary = _vocabulary(rng)
    cumulative = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(vocabulary))))

    def text() -> str:
        return " ".join(rng.choices(vocabulary, cum_weights=cumulative, k=60))  # ~400 characters, one chunk

    config = KnowledgeBaseConfig.model_validate(
        {"embedder": {"type": "offline", "dimensions": dimensions, "batch_size": 256}})
    with tempfile.TemporaryDirectory() as data:
        service = KnowledgeService.from_config({"b": config}, root=Path(data), data_dir=Path(data), router=None)
        rss_before = rss_kb(os.getpid())
        total = embed = 0.0
        batch = 1000
        for start in range(0, size, batch):
            docs = [NewDocument(f"doc{i}", text(), {"group": i % 10}) for i in range(start, min(size, start + batch))]
            report = await service.add("b", docs)
            total += report.seconds
            embed += report.embed_seconds
        stored = total - embed
        latencies: dict[str, list[float]] = {m: [] for m in MODES}
        probes = [" ".join(rng.choices(vocabulary[:2000], k=6)) for _ in range(queries)]
        await service.query("b", probes[0], mode="vector")  # loads the matrix once
        for mode in MODES:
            for probe in probes:
                began = time.perf_counter()
                await service.query("b", probe, top_k=5, mode=mode)
                latencies[mode].append((time.perf_counter() - began) * 1000)
        filtered: list[float] = []
        for probe in probes[: max(1, queries // 4)]:
            began = time.perf_counter()
            await service.query("b", probe, top_k=5, mode="hybrid", flt={"group": 3})
            filtered.append((time.perf_counter() - began) * 1000)
        stats = (await service.stats())[0]
        row = {
            "chunks": size, "ingest_chunks_per_s": size / stored if stored else float("nan"),
            "ingest_s_total": total, "embed_s": embed,
            "rss_mb": rss_kb(os.getpid()) / 1024, "rss_growth_mb": (rss_kb(os.getpid()) - rss_before) / 1024,
            "disk_mb": stats.bytes / 1e6 + (Path(data) / "knowledge" / "b" / "vectors.db").stat().st_size / 1e6,
            "hybrid_filtered_p50_ms": statistics.median(filtered),
        }
        for mode in MODES:
            row[f"{mode}_p50_ms"] = percentile(latencies[mode], 50)
            row[f"{mode}_p99_ms"] = percentile(latencies[mode], 99)
        await service.aclose()
        return row


def show(report: Report) -> None:
    quality = report.summary["quality"]
    print(f"retrieval over docs/ ({report.meta['questions']} questions, {report.meta['embedder']}):")
    print_table([{"mode": m, **quality[m]} for m in MODES],
                [("mode", "mode", "s"), ("recall_at_5", "recall@5", ".3f"), ("mrr", "MRR", ".3f")])
    print("\nembedded store:")
    print_table(report.rows, [
        ("chunks", "chunks", "d"), ("ingest_chunks_per_s", "ingest/s", ".0f"), ("embed_s", "embed s", ".1f"),
        ("keyword_p50_ms", "kw p50", ".2f"), ("keyword_p99_ms", "kw p99", ".2f"),
        ("vector_p50_ms", "vec p50", ".2f"), ("vector_p99_ms", "vec p99", ".2f"),
        ("hybrid_p50_ms", "hyb p50", ".2f"), ("hybrid_p99_ms", "hyb p99", ".2f"),
        ("hybrid_filtered_p50_ms", "filt p50", ".2f"), ("rss_mb", "RSS MB", ".0f"), ("disk_mb", "disk MB", ".0f"),
    ])
    print(f"\nload average at start: {', '.join(f'{x:.1f}' for x in report.meta['load_average_at_start'])}")
    report.print_targets()


def main_json(report: Report) -> str:
    return json.dumps(report.summary, indent=2)
