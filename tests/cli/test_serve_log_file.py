"""`corral serve --log-file`: the server's log lines go to the file, not stderr."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from corral.testing.server import free_port


def test_serve_writes_its_log_to_the_file_it_is_given(tmp_path: Path) -> None:
    log = tmp_path / "corral.log"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "corral", "serve", "--port", str(port), "--log-file", str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=10,
                   json={"model": "scripted", "messages": [{"role": "user", "content": "hi"}]})
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    text = log.read_text()
    assert "Application startup complete" in text
    assert "Application startup complete" not in stderr.decode()


def test_a_log_file_in_a_missing_directory_is_refused_by_name(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "corral.log"
    out = subprocess.run([sys.executable, "-m", "corral", "serve", "--port", str(free_port()), "--log-file",
                          str(missing)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 1
    assert str(missing) in out.stderr
