"""What every benchmark shares: ports, child processes, readiness polls, RSS,
the machine's description, percentiles, and writing results (table, JSON, chart)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
MASTER_KEY = "sk-bench-master-key-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_sets() -> tuple[list[int] | None, list[int] | None]:
    """(server CPUs, load CPUs): the server under test gets CPU 0 alone and the load
    generator and stub share the rest, so the two do not steal each other's core.
    None when the machine has a single CPU (nothing to pin)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return cpus[:1], cpus[1:]


@dataclass
class Child:
    """A child process we started; `stop()` ends it (and only it) by its pid."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log_tail(self, chars: int = 2000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]


def spawn(name: str, argv: Sequence[str], *, log_dir: Path, env: dict[str, str] | None = None,
          cpus: list[int] | None = None) -> Child:
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")
    full_env = {**os.environ, **(env or {})}
    # Children run `python -m bench.<x>` too: make the package importable from anywhere.
    root = str(BENCH_DIR.parent)
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (root, full_env.get("PYTHONPATH")) if p)

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, env=full_env,
                            preexec_fn=pin if cpus else None)
    log.close()
    return Child(name, proc, log_path)


def wait_http(url: str, child: Child | None = None, *, timeout: float = 30.0, status: int = 200,
              interval: float = 0.005) -> float:
    """Polls `url` until it answers `status`; returns the seconds it took."""
    started = time.perf_counter()
    deadline = started + timeout
    while time.perf_counter() < deadline:
        if child is not None and not child.alive():
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == status:
                    return time.perf_counter() - started
        except urllib.error.HTTPError as exc:
            if exc.code == status:
                return time.perf_counter() - started
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(interval)
    tail = child.log_tail() if child is not None else ""
    raise TimeoutError(f"{url} did not answer {status} within {timeout:g}s\n{tail}")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live children (nginx's workers),
    from /proc. CPU per request is the figure other work on the machine cannot skew."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for one in pids:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[rank]


def python_speed_us() -> float:
    """A fixed pure-Python workload (best of 5), to scale absolute figures between
    machines: a recent laptop core does it in about 8-10 us."""
    import timeit

    return min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6


def machine() -> dict[str, Any]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "kernel": platform.release(),
        "python_speed_us": round(python_speed_us(), 1),
        "loadavg": os.getloadavg(),
    }


def tool_version(argv: Sequence[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else None


@dataclass
class Report:
    name: str
    meta: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)

    def target(self, name: str, value: float | None, limit: float, *, unit: str, higher_is_better: bool) -> None:
        held = value is not None and (value >= limit if higher_is_better else value <= limit)
        self.targets.append({"target": name, "value": value, "limit": limit, "unit": unit,
                             "comparison": ">=" if higher_is_better else "<=", "held": held})

    def write(self, out_dir: Path) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{self.name}.json"
        data = {"benchmark": self.name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": machine(), **self.meta, "rows": self.rows, "summary": self.summary,
                "targets": self.targets}
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")
        return path

    def print_targets(self) -> None:
        if not self.targets:
            return
        print("\ntargets:")
        for t in self.targets:
            value = "n/a" if t["value"] is None else f"{t['value']:.3g}"
            mark = "HOLDS" if t["held"] else "MISSED"
            print(f"  {mark:6}  {t['target']}: {value} {t['unit']} (target {t['comparison']} {t['limit']:g})")


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> None:
    """columns: (key, header, format spec)."""
    cells = [[h for _, h, _ in columns]]
    for row in rows:
        line = []
        for key, _, spec in columns:
            value = row.get(key)
            line.append("-" if value is None else format(value, spec) if spec else str(value))
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for n, r in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * w for w in widths))
