"""Provider verification against real loopback fakes: classification, no retry of a
rejected key, ranking, and the gateway's report route."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from corral.config.schema import CorralConfig
from corral.gateway.app import create_app
from corral.gateway.verification import StartupRefused
from corral.llm.registry import build_provider
from corral.llm.verify import verify_providers
from corral.testing.fakes import FakeOpenAI, Reply
from corral.testing.server import free_port, serve_app


def config_for(urls: dict[str, str], keys: dict[str, str], models: dict[str, str], **extra: object) -> CorralConfig:
    return CorralConfig.model_validate({
        "providers": {n: {"type": "openai", "base_url": u, "api_key": keys.get(n, "sk-test")} for n, u in urls.items()},
        "models": {f"{n}-model": {"provider": n, "model": m, "context_window": 128000} for n, m in models.items()},
        **extra,
    })


async def test_each_failure_is_classified_and_a_rejected_key_is_asked_once() -> None:
    async with FakeOpenAI(models=["gpt-4o-mini"]) as good, \
            FakeOpenAI(api_key="sk-right") as locked, \
            FakeOpenAI(models=["something-else"]) as missing, \
            FakeOpenAI(default=Reply.error(429, "slow down", retry_after=5)) as limited:
        dead = f"http://127.0.0.1:{free_port()}/v1"
        config = config_for(
            {"good": good.base_url, "locked": locked.base_url, "missing": missing.base_url, "dead": dead,
             "limited": limited.base_url},
            {"locked": "sk-wrong-key-123"},
            {"good": "gpt-4o-mini", "locked": "gpt-4o-mini", "missing": "gpt-4o-mini", "dead": "gpt-4o-mini",
             "limited": "gpt-4o-mini"},
            verification={"timeout": 5, "completion_check": True},
        )
        providers = {n: build_provider(n, p) for n, p in config.providers.items()}
        try:
            report = await verify_providers(providers, config)
        finally:
            for p in providers.values():
                await p.aclose()
        checks = {c.name: c for c in report.providers}
        assert len(locked.requests) == 1  # a rejected key is never retried
    assert (checks["good"].status, checks["good"].ok, checks["good"].rank) == ("ok", True, 1)
    assert checks["good"].models_listed == 1
    assert checks["locked"].status == "auth_rejected" and not checks["locked"].ok
    assert "sk-wrong-key-123" not in checks["locked"].detail
    assert checks["missing"].status == "model_missing" and checks["missing"].missing_models == ["gpt-4o-mini"]
    assert checks["dead"].status == "unreachable" and checks["dead"].rank is None
    assert checks["limited"].status == "rate_limited" and checks["limited"].ok
    body = report.to_json()
    assert body["version"] == 1
    assert body["summary"] == {"total": 5, "ok": 2, "failed": 3, "required_failed": []}
    assert [p["name"] for p in body["providers"]][:2] in (["good", "limited"], ["limited", "good"])


async def test_report_route_shows_the_background_verification() -> None:
    async with FakeOpenAI(models=["gpt-4o-mini"]) as good:
        config = config_for({"good": good.base_url}, {}, {"good": "gpt-4o-mini"})
        async with serve_app(create_app(config)) as base_url, httpx.AsyncClient(base_url=base_url) as http:
            for _ in range(100):  # bounded: 5 s
                body = (await http.get("/v1/startup/verification")).json()
                if body["status"] == "complete":
                    break
                await asyncio.sleep(0.05)
    assert body["status"] == "complete"
    assert body["providers"][0]["name"] == "good" and body["providers"][0]["status"] == "ok"
    assert body["services"]["status"] == "not_run"  # plain `serve`; `corral up` fills it


async def test_strict_mode_refuses_to_start_when_a_required_provider_fails() -> None:
    async with FakeOpenAI(api_key="sk-right") as locked:
        config = config_for({"locked": locked.base_url}, {"locked": "sk-wrong"}, {"locked": "gpt-4o-mini"},
                            verification={"strict": True})
        app = create_app(config)
        gateway = app.state.gateway
        with pytest.raises(StartupRefused, match="locked"):
            await gateway.start()
        await gateway.stop()
    assert not gateway.readiness.ready
