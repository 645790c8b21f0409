"""`corral serve` as a real process: SIGTERM finishes in-flight streams, then exits 0."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import httpx

from corral.testing.process import ServeProcess, start_serve

CONFIG = """
version: 1
providers:
  script:
    type: scripted
    script:
      - text: "{words}"
        chunk_delay: 0.05
models:
  slow:
    provider: script
    model: scripted
server:
  shutdown_timeout: 20
"""


def test_sigterm_during_a_stream_lets_it_complete_and_exits_zero(tmp_path: Path, serve_processes) -> None:
    words = " ".join(f"w{i}" for i in range(40))  # about 2 s of streaming
    config = tmp_path / "corral.yaml"
    config.write_text(CONFIG.format(words=words))
    server: ServeProcess = start_serve(config)
    serve_processes.append(server)

    lines: list[str] = []
    first_chunk = threading.Event()

    def consume() -> None:
        with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", timeout=30, json={
                "model": "slow", "stream": True, "messages": [{"role": "user", "content": "go"}]}) as resp:
            for line in resp.iter_lines():
                if line:
                    lines.append(line)
                    first_chunk.set()

    reader = threading.Thread(target=consume)
    reader.start()
    assert first_chunk.wait(10)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # The listener is closed: a new request is refused while the stream goes on.
    try:
        httpx.get(f"{server.base_url}/health", timeout=1)
        refused = False
    except httpx.HTTPError:
        refused = True
    reader.join(30)
    assert server.proc.wait(timeout=30) == 0, server.output()

    assert refused
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == words


def test_sigterm_during_startup_stops_the_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "corral.yaml"
    config.write_text(CONFIG.format(words="hi"))
    proc = subprocess.Popen([sys.executable, "-m", "corral", "serve", "--config", str(config), "--port", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # importing or building the app, not yet serving
        proc.send_signal(signal.SIGTERM)
        # Stopped, not ignored: exit 0 once our handler is in place, -SIGTERM before that.
        assert proc.wait(timeout=15) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
