"""Provider verification: check every enabled provider once, in parallel, and rank them.

Each provider is asked for its model list (and, when configured, one minimal
completion), under a per-provider timeout and a concurrency bound. Failures are
classified (auth rejected, unreachable, rate limited, model missing, error). A rejected
key is never retried: it is reported and left alone, however many times verification
runs. Providers that pass are scored on latency, cost and capability and ranked.

The report's JSON shape is documented in docs/verification.md and kept stable
(``version`` changes if it ever has to change).
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from corral.config.schema import CorralConfig
from corral.llm import errors
from corral.llm.pricing import PricingTable
from corral.llm.provider import Provider
from corral.llm.types import ChatRequest, Message

Status = Literal["ok", "auth_rejected", "unreachable", "rate_limited", "model_missing", "timeout", "error"]
REPORT_VERSION = 1


@dataclass(slots=True)
class ProviderCheck:
    name: str
    type: str
    required: bool
    status: Status = "ok"
    ok: bool = True
    latency_ms: float | None = None
    models_listed: int | None = None
    configured_models: list[str] = field(default_factory=list)
    missing_models: list[str] = field(default_factory=list)
    completion_checked: bool = False
    detail: str = ""
    score: float = 0.0
    rank: int | None = None


@dataclass(slots=True)
class VerificationReport:
    started_at: str
    finished_at: str
    duration_ms: float
    strict: bool
    providers: list[ProviderCheck]

    @property
    def required_failed(self) -> list[str]:
        return [p.name for p in self.providers if p.required and not p.ok]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "status": "complete",
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_ms": round(self.duration_ms, 1),
            "strict": self.strict,
            "summary": {
                "total": len(self.providers),
                "ok": sum(1 for p in self.providers if p.ok),
                "failed": sum(1 for p in self.providers if not p.ok),
                "required_failed": self.required_failed,
            },
            "providers": [asdict(p) for p in self.providers],
        }


def _classify(error: BaseException) -> tuple[Status, str]:
    if isinstance(error, errors.AuthenticationError | errors.PermissionDeniedError):
        return "auth_rejected", f"the provider rejected the API key ({error}); fix the key, it will not be retried"
    if isinstance(error, errors.RateLimitError):
        return "rate_limited", str(error)
    if isinstance(error, errors.NotFoundError):
        return "model_missing", str(error)
    if isinstance(error, errors.UpstreamTimeout | builtins.TimeoutError):
        return "timeout", str(error) or "no answer in time"
    if isinstance(error, errors.UpstreamUnavailableError):
        return "unreachable", str(error)
    return "error", f"{type(error).__name__}: {error}"


async def check_provider(
    name: str,
    provider: Provider,
    config: CorralConfig,
    *,
    timeout_seconds: float,
    completion_check: bool,
) -> ProviderCheck:
    pconf = config.providers[name]
    configured = sorted({d.model for m in config.models.values() for d in m.all_deployments() if d.provider == name})
    check = ProviderCheck(name=name, type=pconf.type, required=pconf.required, configured_models=configured)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_seconds):
            listed = await provider.list_models()
            check.models_listed = len(listed)
            ids = {m.id for m in listed}
            # Only judge "missing" when the provider really lists models (some list none).
            if ids and pconf.type != "scripted":
                check.missing_models = [m for m in configured if m not in ids and m.split("/")[-1] not in ids]
            if completion_check and configured:
                probe = ChatRequest(model=configured[0], messages=[Message.text("user", "ping")], max_tokens=1)
                await provider.complete(probe)
                check.completion_checked = True
    except (errors.ProviderError, builtins.TimeoutError) as exc:
        check.status, check.detail = _classify(exc)
        # A rate-limited provider answered with a valid key: usable, but degraded.
        check.ok = check.status == "rate_limited"
    except Exception as exc:  # a provider returning garbage must not break startup
        check.status, check.detail, check.ok = "error", f"{type(exc).__name__}: {exc}", False
    check.latency_ms = round((time.perf_counter() - started) * 1000, 2)
    if check.ok and check.missing_models:
        check.status, check.ok = "model_missing", False
        check.detail = f"configured models not offered by the provider: {', '.join(check.missing_models)}"
    return check


def _score(checks: list[ProviderCheck], config: CorralConfig, pricing: PricingTable) -> None:
    """score = 50 * speed + 30 * cheapness + 20 * capability, each normalised to [0, 1]
    across the providers that passed, halved for a rate-limited one; failed providers
    score 0 and get no rank."""
    passed = [c for c in checks if c.ok]
    if not passed:
        return

    def norm(values: dict[str, float], *, lower_is_better: bool) -> dict[str, float]:
        lo, hi = min(values.values()), max(values.values())
        if hi == lo:
            return {k: 1.0 for k in values}
        return {k: ((hi - v) if lower_is_better else (v - lo)) / (hi - lo) for k, v in values.items()}

    latency = {c.name: c.latency_ms or 0.0 for c in passed}
    cost: dict[str, float] = {}
    capability: dict[str, float] = {}
    for c in passed:
        prices = [p for p in (pricing.price(m) for m in c.configured_models) if p is not None]
        cost[c.name] = sum(p.input + p.output for p in prices) / len(prices) if prices else 0.0
        windows = [m.context_window or 0 for m in config.models.values()
                   if any(d.provider == c.name for d in m.all_deployments())]
        capability[c.name] = float(max(windows, default=0))
    speed, cheap, able = norm(latency, lower_is_better=True), norm(cost, lower_is_better=True), \
        norm(capability, lower_is_better=False)
    for c in passed:
        score = 50 * speed[c.name] + 30 * cheap[c.name] + 20 * able[c.name]
        c.score = round(score * (0.5 if c.status == "rate_limited" else 1.0), 2)  # degraded: ranks below
    for rank, c in enumerate(sorted(passed, key=lambda c: (-c.score, c.status != "ok", c.name)), start=1):
        c.rank = rank


async def verify_providers(
    providers: Mapping[str, Provider],
    config: CorralConfig,
    *,
    pricing: PricingTable | None = None,
) -> VerificationReport:
    settings = config.verification
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    gate = asyncio.Semaphore(settings.concurrency)

    async def bounded(name: str, provider: Provider) -> ProviderCheck:
        async with gate:
            return await check_provider(name, provider, config, timeout_seconds=settings.timeout,
                                        completion_check=settings.completion_check)

    checks = list(await asyncio.gather(*(bounded(n, p) for n, p in providers.items() if n in config.providers)))
    _score(checks, config, pricing or PricingTable(config.pricing))
    return VerificationReport(
        started_at=started_at.isoformat(),
        finished_at=datetime.now(UTC).isoformat(),
        duration_ms=(time.perf_counter() - started) * 1000,
        strict=settings.strict,
        providers=sorted(checks, key=lambda c: (c.rank is None, c.rank or 0, c.name)),
    )
