"""`Gateway.apply`: a new config version serves new calls and runs while an agent run
started before it finishes on the version it started with, and the old version is
closed after it; what a reload cannot change is named and kept."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from corral.config.schema import CorralConfig
from corral.gateway.app import create_app
from corral.gateway.reload import hash_files, keep_restart_only, restart_only_changes
from corral.llm.types import Message


def config(tmp_path: Path, reply: str, *, delay: float = 0.0, **extra: Any) -> CorralConfig:
    return CorralConfig.model_validate({
        "providers": {"s": {"type": "scripted", "echo": False, "script": [{"text": reply, "delay": delay}]}},
        "models": {"m": {"provider": "s", "model": "x"}},
        "agents": {"helper": {"model": "m", "instructions": f"answer {reply}"}},
        "runs": {"workers": 1, "poll_interval": 0.05},
        "database": {"url": f"sqlite:///{tmp_path / 'c.db'}"}, "verification": {"enabled": False},
        **extra})


async def test_a_run_in_flight_finishes_on_its_version_and_new_runs_use_the_new_one(tmp_path: Path) -> None:
    gateway = create_app(config(tmp_path, "from v1", delay=1.0)).state.gateway
    await gateway.start()
    try:
        old = gateway.current
        record, live = await old.agents.service.start_run("helper", [Message.text("user", "hi")])
        assert live is not None
        await asyncio.sleep(0.2)  # the run is waiting on the v1 model

        await gateway.apply(config(tmp_path, "from v2"), "v2")
        assert gateway.current is not old and gateway.current.config_hash == "v2"
        assert len(gateway.retiring) == 1  # the old version drains: its run is still executing
        assert live.task is not None and not live.task.done()

        new, _ = await gateway.agents.service.start_run("helper", [Message.text("user", "hi")])
        finished_new = await gateway.agents.service.wait(new.id, 5)
        finished_old = await old.agents.service.wait(record.id, 5)
        assert (finished_old.state, finished_old.output["output"]) == ("succeeded", "from v1")
        assert (finished_new.state, finished_new.output["output"]) == ("succeeded", "from v2")
        await asyncio.wait_for(asyncio.gather(*gateway.retiring), 5)
        assert gateway.retiring == set()
    finally:
        await gateway.stop()


async def test_model_limits_of_the_new_config_apply_to_new_calls(tmp_path: Path) -> None:
    gateway = create_app(config(tmp_path, "hi")).state.gateway
    await gateway.start()
    try:
        assert gateway.limiter.model_limits == {}
        limited = config(tmp_path, "hi").model_dump()
        limited["models"]["m"]["rpm"] = 5
        await gateway.apply(CorralConfig.model_validate(limited), "v2")
        assert gateway.limiter.model_limits == {"m": (5, None)}
    finally:
        await gateway.stop()


def test_restart_only_settings_are_named_and_keep_their_old_values(tmp_path: Path) -> None:
    old = config(tmp_path, "a")
    new = config(tmp_path, "b", server={"port": 9999, "max_body_bytes": 4096}, cache={"prefix": "other:"},
                 auth={"throttle": {"limit": 3}, "api_keys": ["k" * 40]})
    assert restart_only_changes(old, new) == ["server.port", "server.max_body_bytes", "cache.prefix",
                                              "auth.throttle"]
    kept = keep_restart_only(old, new)
    assert (kept.server, kept.cache, kept.auth.throttle) == (old.server, old.cache, old.auth.throttle)
    assert [k.get_secret_value() for k in kept.auth.api_keys] == ["k" * 40]  # auth itself is live
    assert kept.providers["s"].script[0].text == "b"  # the rest is the new config


def test_the_files_hash_changes_with_any_of_the_files(tmp_path: Path) -> None:
    files = [tmp_path / "corral.yaml", tmp_path / ".env"]
    files[0].write_text("version: 1\n")
    first = hash_files(files)
    assert hash_files(files) == first and len(first) == 12
    files[1].write_text("OPENAI_API_KEY=sk-rotated\n")
    assert hash_files(files) != first
