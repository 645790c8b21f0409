"""`corral serve` reloads its config live (SIGHUP, `--watch`): a stream in flight finishes
on the version it started with, new requests see the new models, a broken config keeps
the old one serving with the error (file:line:key) in `/health` and `/metrics`, and a
setting that cannot change live is named as needing a restart."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from corral.testing.process import ServeProcess, start_serve

BASE = """
version: 1
providers:
  slow:
    type: scripted
    echo: false
    script:
      - text: "one two three four five six seven eight nine ten"
        chunk_delay: 0.3
  fast:
    type: scripted
models:
  slow:
    provider: slow
    model: slow
  scripted:
    provider: fast
    model: scripted
"""

ADDED = BASE + """\
  added:
    provider: fast
    model: added
"""

WORDS = "one two three four five six seven eight nine ten"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    started: list[ServeProcess] = []

    def run(config: Path, *extra: str, ready_timeout: float = 20.0) -> ServeProcess:
        server = start_serve(config, extra=list(extra), ready_timeout=ready_timeout,
                             env={"CORRAL_DATA_DIR": str(tmp_path / "data"), "CORRAL_MASTER_KEY": ""})
        started.append(server)
        return server

    yield run
    for server in started:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=15)
        except Exception:
            server.proc.kill()


def health(base_url: str) -> dict[str, Any]:
    reload: dict[str, Any] = httpx.get(f"{base_url}/health", headers={"connection": "close"}, timeout=5).json()["reload"]
    return reload


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def metric(base_url: str, name: str, **labels: str) -> float | None:
    text = httpx.get(f"{base_url}/metrics", headers={"connection": "close"}, timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def chat(base_url: str, model: str) -> str | None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0,
                           default_headers={"connection": "close"})
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "ping"}])
    return reply.choices[0].message.content


def stream_slowly(base_url: str, first_chunk: concurrent.futures.Future[None]) -> str:
    """The slow model's reply, streamed (about 3.5 s); ``first_chunk`` is set when text arrives."""
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=30)
    text = ""
    with client.chat.completions.create(model="slow", messages=[{"role": "user", "content": "go"}],
                                        stream=True) as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
                if not first_chunk.done():
                    first_chunk.set_result(None)
    return text


def reload_under_a_stream(server: ServeProcess, config: Path, trigger: Callable[[], None]) -> None:
    """A stream started before the reload ends with its whole reply; a request made after
    it sees the model the reload added."""
    before = health(server.base_url)
    with pytest.raises(openai.NotFoundError):
        chat(server.base_url, "added")
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        first_chunk: concurrent.futures.Future[None] = concurrent.futures.Future()
        streaming = pool.submit(stream_slowly, server.base_url, first_chunk)
        first_chunk.result(timeout=10)
        config.write_text(ADDED)
        trigger()
        wait_for(lambda: health(server.base_url)["config_hash"] != before["config_hash"], "the reload")
        assert not streaming.done(), "the stream should still be in flight when the reload is applied"
        assert chat(server.base_url, "added") == "You said: ping"
        # The old version (its router and provider connections) stays open for the stream...
        assert f"config {before['config_hash']} retired" not in server.output()
        assert streaming.result(timeout=15) == WORDS
    # ...and is closed once it ended.
    wait_for(lambda: f"config {before['config_hash']} retired" in server.output(), "the old version's retirement")
    after = health(server.base_url)
    assert (after["result"], after["error"], after["reloads"]) == ("ok", None, 1)
    assert metric(server.base_url, "corral_config_reloads_total", result="ok") == 1.0
    assert metric(server.base_url, "corral_config_info", hash=after["config_hash"]) == 1.0
    assert metric(server.base_url, "corral_config_info", hash=before["config_hash"]) is None
    assert "config reloaded: now serving" in server.output()


def test_sighup_reloads_without_breaking_a_stream_in_flight(tmp_path: Path, serve: Callable[..., ServeProcess]
                                                            ) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text(BASE)
    server = serve(config)
    reload_under_a_stream(server, config, lambda: server.proc.send_signal(signal.SIGHUP))


def test_watch_reloads_when_the_file_changes(tmp_path: Path, serve: Callable[..., ServeProcess]) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text(BASE)
    server = serve(config, "--watch")
    reload_under_a_stream(server, config, lambda: None)


def test_a_broken_config_keeps_the_old_one_serving(tmp_path: Path, serve: Callable[..., ServeProcess]) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text(BASE)
    server = serve(config, "--watch")
    served = health(server.base_url)["config_hash"]

    # An unknown key (the new model's `modle:`), named with its file, line and key path.
    broken = ADDED.replace("    model: added", "    modle: added")
    line = broken.splitlines().index("    modle: added") + 1
    config.write_text(broken)
    wait_for(lambda: health(server.base_url)["result"] == "error", "the refused reload")
    status = health(server.base_url)
    assert status["config_hash"] == served
    assert f"{config}:{line}" in status["error"] and "models.added.modle" in status["error"]
    assert chat(server.base_url, "scripted") == "You said: ping"
    with pytest.raises(openai.NotFoundError):
        chat(server.base_url, "added")

    # A YAML syntax error: refused as well, with its line.
    config.write_text(BASE + "  broken: [unclosed\n")
    wait_for(lambda: health(server.base_url)["error"] != status["error"], "the second refused reload")
    assert f"{config}:" in health(server.base_url)["error"] and "invalid YAML" in health(server.base_url)["error"]
    assert metric(server.base_url, "corral_config_reloads_total", result="error") == 2.0
    assert metric(server.base_url, "corral_config_info", hash=served) == 1.0
    assert "config reload failed" in server.output()

    # Fixed: served.
    config.write_text(ADDED)
    wait_for(lambda: health(server.base_url)["result"] == "ok", "the reload of the fixed config")
    assert chat(server.base_url, "added") == "You said: ping"


def test_settings_that_cannot_change_live_are_named_and_kept(tmp_path: Path, serve: Callable[..., ServeProcess]
                                                             ) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text(BASE)
    server = serve(config)
    config.write_text(ADDED + "server:\n  max_body_bytes: 2048\n  port: 1\n")
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: health(server.base_url)["reloads"] == 1, "the reload")
    assert health(server.base_url)["restart_required"] == ["server.port", "server.max_body_bytes"]
    assert "need a restart" in server.output() and "server.port, server.max_body_bytes" in server.output()
    # The live parts changed, the others kept their old values (a 4 KiB body is still accepted).
    assert chat(server.base_url, "added") == "You said: ping"
    body = {"model": "added", "messages": [{"role": "user", "content": "x" * 4096}]}
    assert httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=10).status_code == 200


@pytest.mark.slow
def test_sighup_to_the_parent_reloads_every_worker(tmp_path: Path, serve: Callable[..., ServeProcess]) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text(BASE)
    server = serve(config, "--workers", "2", ready_timeout=60)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        first_chunk: concurrent.futures.Future[None] = concurrent.futures.Future()
        streaming = pool.submit(stream_slowly, server.base_url, first_chunk)
        first_chunk.result(timeout=10)
        config.write_text(ADDED)
        os.kill(server.proc.pid, signal.SIGHUP)
        # Both workers log their reload; the parent restarted none of them.
        wait_for(lambda: server.output().count("config reloaded: now serving") == 2, "both workers' reload", 15)
        # Fresh connections land on either worker: every one knows the new model.
        assert [chat(server.base_url, "added") for _ in range(12)] == ["You said: ping"] * 12
        assert streaming.result(timeout=15) == WORDS
    assert "restarting processes" not in server.output()
