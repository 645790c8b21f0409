"""Run `corral serve` as a real process (end-to-end tests, benchmarks)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from corral.testing.server import free_port


class ServeProcess:
    def __init__(self, proc: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
        self.proc = proc
        self.base_url = base_url
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_serve(config: Path, *, port: int | None = None, env: dict[str, str] | None = None,
                extra: list[str] | None = None, ready_timeout: float = 20.0) -> ServeProcess:
    port = port or free_port()
    log = config.parent / f"serve-{port}.log"
    handle = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", "serve", "--config", str(config), "--port", str(port), *(extra or [])],
        stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
    )
    handle.close()
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"corral serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=0.5).status_code == 200:
                return ServeProcess(proc, base_url, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"corral serve not ready in {ready_timeout}s:\n{log.read_text()}")
