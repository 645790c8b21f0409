"""Everything a gateway benchmark runs against, on loopback: the stub upstream,
Corral (`corral serve`, 1 worker) and the bare pass-through proxy. Started in
order, stopped in reverse, always (also on errors and Ctrl-C)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import MASTER_KEY, Child, free_port, spawn, wait_http
from bench.stub import STREAM_PREFIX, start_stub

MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello."}]


PROXY_TARGETS = {"tight": "passthrough", "httpx": "httpx-proxy", "aiohttp": "aiohttp-proxy"}  # style -> target

AGENT_CONFIG = """agents:
  helper:
    model: bench-stream  # the agent runner always streams from its model
    instructions: You are a helpful assistant.
"""


def tracing_config(sink_port: int, sampling_rate: float) -> str:
    return f"""  tracing:
    enabled: true
    exporter: otlp
    endpoint: http://127.0.0.1:{sink_port}
    sampling_rate: {sampling_rate:g}
"""


def corral_config(stub_port: int, data_dir: Path, *, log_level: str = "warning", agent: bool = False,
                  tracing: str = "") -> str:
    """Corral with the features a production gateway has on: a master key, metrics,
    a SQLite store. Two models on the one stub: `bench` (JSON) and `bench-stream` (SSE).
    ``tracing``: an ``observability.tracing`` block (`tracing_config`)."""
    return f"""version: 1
providers:
  stub:
    type: openai-compatible
    base_url: http://127.0.0.1:{stub_port}/v1
    api_key: sk-stub-upstream
  stub-sse:
    type: openai-compatible
    base_url: http://127.0.0.1:{stub_port}{STREAM_PREFIX}/v1
    api_key: sk-stub-upstream
models:
  bench:
    provider: stub
    model: gpt-bench
  bench-stream:
    provider: stub-sse
    model: gpt-bench
auth:
  master_key: {MASTER_KEY}
database:
  url: sqlite+aiosqlite:///{data_dir / 'corral.db'}
observability:
  log_level: {log_level}
  metrics: true
{tracing}verification:
  enabled: false
""" + (AGENT_CONFIG if agent else "")


def corral_body(stream: bool, model: str | None = None) -> bytes:
    return json.dumps({"model": model or ("bench-stream" if stream else "bench"), "messages": MESSAGES,
                       "max_tokens": 64, "stream": stream}).encode()


def upstream_body(stream: bool) -> bytes:
    return json.dumps({"model": "gpt-bench", "messages": MESSAGES, "max_tokens": 64, "stream": stream}).encode()


def corral_argv(config: Path, port: int) -> list[str]:
    exe = shutil.which("corral")
    head = [exe] if exe else [sys.executable, "-m", "corral"]
    return [*head, "serve", "--config", str(config), "--port", str(port), "--workers", "1"]


@dataclass
class Stack:
    """Starts what is asked for; `close()` stops every child it started."""

    server_cpus: list[int] | None = None
    load_cpus: list[int] | None = None
    prefer_nginx: bool = True
    log_level: str = "warning"
    agent: bool = False  # also serve an agent (`helper`), for sessions recording
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="corral-bench-")))
    children: list[Child] = field(default_factory=list)
    stub_port: int = 0
    stub_kind: str = ""
    corral_port: int = 0
    passthrough_port: int = 0
    httpx_proxy_port: int = 0
    aiohttp_proxy_port: int = 0
    baseline_port: int = 0
    corral: Child | None = None
    sink_port: int = 0
    traced_ports: dict[str, int] = field(default_factory=dict)  # "traced-<rate>" -> port

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
        shutil.rmtree(self.work, ignore_errors=True)

    def start_stub(self) -> None:
        self.stub_port = free_port()
        child, self.stub_kind = start_stub(self.stub_port, self.work, prefer_nginx=self.prefer_nginx,
                                           cpus=self.load_cpus)
        self.children.append(child)

    def start_passthrough(self, style: str = "tight") -> None:
        """`tight`: the floor (`passthrough`); `httpx`: the idiomatic proxy (`httpx-proxy`);
        `aiohttp`: the bare Starlette + aiohttp proxy (`aiohttp-proxy`)."""
        port = free_port()
        name = PROXY_TARGETS[style]
        child = spawn(name, [sys.executable, "-m", "bench.passthrough", "--port", str(port), "--style", style,
                             "--upstream", f"http://127.0.0.1:{self.stub_port}"],
                      log_dir=self.work, cpus=self.server_cpus)
        self.children.append(child)
        wait_http(f"http://127.0.0.1:{port}/health", child, timeout=30)
        if style == "tight":
            self.passthrough_port = port
        elif style == "httpx":
            self.httpx_proxy_port = port
        else:
            self.aiohttp_proxy_port = port

    def write_corral_config(self, name: str = "corral", tracing: str = "") -> Path:
        """The config and its own data directory (a baseline must not share the store:
        its schema may be older)."""
        data = self.work / ("data" if name == "corral" else f"data-{name}")
        data.mkdir(exist_ok=True)
        path = self.work / f"{name}.yaml"
        path.write_text(corral_config(self.stub_port, data, log_level=self.log_level, agent=self.agent,
                                      tracing=tracing))
        return path

    def start_traced(self, sampling_rate: float) -> str:
        """Another Corral, the same config plus tracing exported over OTLP/HTTP to a loopback
        sink (started once), sampling ``sampling_rate`` of the requests. Returns its target name."""
        if not self.sink_port:
            self.sink_port = free_port()
            sink = spawn("otlp-sink", [sys.executable, "-m", "bench.otlp_sink", "--port", str(self.sink_port)],
                         log_dir=self.work, cpus=self.load_cpus)
            self.children.append(sink)
            wait_http(f"http://127.0.0.1:{self.sink_port}/count", sink, timeout=30)
        name = f"traced-{sampling_rate:g}"
        config = self.write_corral_config(name, tracing_config(self.sink_port, sampling_rate))
        port = free_port()
        child = spawn(name, corral_argv(config, port), log_dir=self.work, cpus=self.server_cpus,
                      env={"CORRAL_DATA_DIR": str(self.work / f"data-{name}")})
        self.children.append(child)
        wait_http(f"http://127.0.0.1:{port}/readyz", child, timeout=60)
        self.traced_ports[name] = port
        return name

    def otlp_exports(self) -> dict[str, int]:
        """What the sink received (exports and bytes), {} without one."""
        if not self.sink_port:
            return {}
        with urllib.request.urlopen(f"http://127.0.0.1:{self.sink_port}/count", timeout=5) as resp:
            data: dict[str, int] = json.loads(resp.read())
        return data

    def start_corral(self) -> float:
        """Returns the seconds from exec to /readyz 200."""
        config = self.write_corral_config()
        if self.corral is not None:  # a restart (startup benchmark): the old one goes first
            self.corral.stop()
            self.children.remove(self.corral)
        self.corral_port = free_port()
        child = spawn("corral", corral_argv(config, self.corral_port), log_dir=self.work, cpus=self.server_cpus,
                      env={"CORRAL_DATA_DIR": str(self.work / "data")})
        self.children.append(child)
        self.corral = child
        return wait_http(f"http://127.0.0.1:{self.corral_port}/readyz", child, timeout=60)

    def pids(self) -> dict[str, int]:
        by_name = {c.name: c.pid for c in self.children}
        stub = by_name.get("stub-nginx") or by_name.get("stub-python") or 0
        return {"direct": stub, "passthrough": by_name.get("passthrough", 0), "corral": by_name.get("corral", 0),
                "baseline": by_name.get("baseline", 0), "httpx-proxy": by_name.get("httpx-proxy", 0),
                "aiohttp-proxy": by_name.get("aiohttp-proxy", 0),
                **{name: by_name.get(name, 0) for name in self.traced_ports}}

    def start_baseline(self, src: str | None, config_extra: str = "") -> float:
        """A second Corral from another source tree (`src` holds the `corral` package; None:
        this one), same config plus ``config_extra``: an A/B of a change, side by side,
        under the same load."""
        config = self.write_corral_config("baseline")
        if config_extra:
            config.write_text(config.read_text() + config_extra)
        self.baseline_port = free_port()
        argv = [sys.executable, "-m", "corral", "serve", "--config", str(config), "--port", str(self.baseline_port),
                "--workers", "1"]
        env = {"CORRAL_DATA_DIR": str(self.work / "data-baseline")}
        if src is not None:
            env["PYTHONPATH"] = src
        child = spawn("baseline", argv, log_dir=self.work, cpus=self.server_cpus, env=env)
        self.children.append(child)
        return wait_http(f"http://127.0.0.1:{self.baseline_port}/readyz", child, timeout=60)

    def corral_features(self) -> dict[str, Any]:
        """What was on in the Corral under test, probed rather than assumed."""
        base = f"http://127.0.0.1:{self.corral_port}"
        features: dict[str, Any] = {}
        request = urllib.request.Request(f"{base}/v1/chat/completions", data=corral_body(False),
                                         headers={"content-type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                features["auth_enforced"] = False
                features["overhead_header"] = resp.headers.get("x-corral-overhead-ms") is not None
        except urllib.error.HTTPError as exc:
            features["auth_enforced"] = exc.code == 401
        scrape = urllib.request.Request(f"{base}/metrics", headers={"authorization": f"Bearer {MASTER_KEY}"})
        try:
            with urllib.request.urlopen(scrape, timeout=10) as resp:
                features["metrics"] = resp.status == 200 and b"corral_" in resp.read()
        except urllib.error.HTTPError:
            features["metrics"] = False
        return features

    def usage_rows(self) -> dict[str, int]:
        """Rows in every usage/spend-like table of Corral's SQLite store (proof that
        usage recording was on, and that it kept up)."""
        db = self.work / "data" / "corral.db"
        if not db.exists():
            return {}
        with sqlite3.connect(db) as conn:
            names = [r[0] for r in conn.execute("select name from sqlite_master where type='table'")]
            return {n: int(conn.execute(f'select count(*) from "{n}"').fetchone()[0])
                    for n in names if any(w in n.lower() for w in ("usage", "spend", "session", "message"))}
