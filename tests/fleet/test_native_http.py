"""The native backend against a real `corral serve` (its OpenAI-compatible API)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from corral.testing.process import start_serve

from .conftest import Fleet


async def test_native_backend_runs_turns_on_a_corral_serve_url(fleet: Fleet, tmp_path: Path) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text("version: 1\nproviders:\n  script:\n    type: scripted\n"
                      "    script: [{text: served, usage: {input_tokens: 11, output_tokens: 3}}]\n"
                      "models:\n  assistant: {provider: script, model: scripted}\n")
    serve = await asyncio.to_thread(start_serve, config, ready_timeout=60)
    try:
        await fleet.start_supervisor()
        await fleet.start_node("http-node", backends={"remote": {
            "type": "native", "url": serve.base_url, "model": "assistant"}},
            projects=[{"name": "demo", "directory": str(tmp_path / "demo"), "backend": "remote"}])
        started = await fleet.command("start", {"project": "demo"}, {"project": "demo", "prompt": "hi", "wait": True})
        assert started["output"]["reply"] == "served"
        sid = started["output"]["session_id"]
        again = await fleet.command("prompt", {"session_id": sid}, {"message": "more", "wait": True})
        assert again["output"]["reply"] == "You said: more"  # the script is used up; echo
        assert fleet.sup is not None
        usage = []
        for _ in range(100):
            usage = await fleet.sup.store.list_events(session_id=sid, type_prefix="usage")
            if len(usage) == 2:
                break
            await asyncio.sleep(0.05)
        assert (usage[0]["input_tokens"], usage[0]["output_tokens"]) == (11, 3)
    finally:
        serve.proc.terminate()
        await asyncio.to_thread(serve.proc.wait, 20)
