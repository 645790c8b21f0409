"""The boot manager: bring up or verify services in dependency order.

Levels of the dependency graph run one after another; the services of one level are
started and probed in parallel. Each service is probed with exponential backoff and
jitter until it is healthy, its retries run out, or its deadline (or the overall
one) passes. A rejected credential ends the wait at once: retrying cannot fix it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import httpx

from corral.boot.launch import Launcher, LaunchError
from corral.boot.probes import ProbeResult, Status, probe
from corral.boot.specs import ServiceSpec, env_prefix, topological_levels

MAX_BACKOFF = 5.0
# `corral up` hands its summary to the server it starts through this variable.

Prober = Callable[[ServiceSpec], Awaitable[ProbeResult]]
Progress = Callable[[str, str], None]  # (service name, message)


class Outcome(StrEnum):
    STARTED = "started"
    REMOTE = "remote"
    ALREADY_RUNNING = "already_running"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class ServiceOutcome:
    spec: ServiceSpec
    outcome: Outcome
    detail: str
    status: Status | None = None
    latency_ms: float | None = None
    attempts: int = 0
    elapsed_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.STARTED, Outcome.REMOTE, Outcome.ALREADY_RUNNING)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "type": self.spec.type,
            "outcome": self.outcome.value,
            "status": self.status.value if self.status else None,
            "required": self.spec.required,
            "remote": self.spec.remote,
            "address": self.spec.address,
            "latency_ms": self.latency_ms,
            "attempts": self.attempts,
            "elapsed_ms": round(self.elapsed_ms, 1),
            "detail": self.detail,
        }


@dataclass
class BootReport:
    strict: bool
    started_at: datetime
    outcomes: list[ServiceOutcome] = field(default_factory=list)
    duration_ms: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {o.value: sum(1 for x in self.outcomes if x.outcome is o) for o in Outcome}

    @property
    def failed_required(self) -> list[ServiceOutcome]:
        return [o for o in self.outcomes if o.spec.required and o.outcome is Outcome.FAILED]

    @property
    def blocked(self) -> bool:
        """True when a required service failed: strict mode refuses to go on."""
        return bool(self.failed_required)

    def outcome(self, name: str) -> ServiceOutcome:
        return next(o for o in self.outcomes if o.spec.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "blocked" if self.blocked else ("degraded" if self.warnings else "ok"),
            "strict": self.strict,
            "blocked": self.blocked,
            "started_at": self.started_at.isoformat(),
            "duration_ms": round(self.duration_ms, 1),
            "counts": self.counts(),
            "services": [o.to_dict() for o in self.outcomes],
            "warnings": list(self.warnings),
        }


def backoff_delay(attempt: int, base: float, rng: random.Random) -> float:
    """Delay before probe number `attempt + 1`: doubling, capped, with equal jitter."""
    ceiling = min(MAX_BACKOFF, base * (2 ** (attempt - 1)))
    return rng.uniform(ceiling / 2, ceiling)


class BootManager:
    def __init__(
        self,
        specs: list[ServiceSpec],
        *,
        http: httpx.AsyncClient,
        launcher: Launcher | None = None,
        strict: bool = True,
        deadline: float | None = None,
        rng: random.Random | None = None,
        prober: Prober | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.levels = topological_levels(specs)  # raises on cycles / unknown dependencies
        self.http = http
        self.launcher = launcher
        self.strict = strict
        self.deadline = deadline
        self.rng = rng or random.Random()
        self._probe: Prober = prober or (lambda spec: probe(spec, http=http))
        self._progress = progress or (lambda _name, _message: None)

    async def run(self) -> BootReport:
        report = BootReport(strict=self.strict, started_at=datetime.now(UTC))
        began = time.monotonic()
        overall_end = began + self.deadline if self.deadline else None
        done: dict[str, ServiceOutcome] = {}
        for level in self.levels:
            blocking = [o for o in done.values() if o.spec.required and o.outcome is Outcome.FAILED]
            jobs = []
            for spec in level:
                reason = self._skip_reason(spec, done, blocking)
                if reason:
                    jobs.append(_ready(ServiceOutcome(spec, Outcome.SKIPPED, reason)))
                else:
                    jobs.append(self._bring_up(spec, overall_end))
            for result in await asyncio.gather(*jobs):
                done[result.spec.name] = result
                self._progress(result.spec.name, f"{result.outcome.value}: {result.detail}")
        report.outcomes = [done[s.name] for level in self.levels for s in level]
        report.duration_ms = (time.monotonic() - began) * 1000
        report.warnings = _warnings(report)
        return report

    def _skip_reason(self, spec: ServiceSpec, done: dict[str, ServiceOutcome],
                     blocking: list[ServiceOutcome]) -> str | None:
        if not spec.enabled:
            return f"disabled ({env_prefix(spec.name)}ENABLED or enabled: false)"
        if self.strict and blocking:
            return f"not attempted: required service {blocking[0].spec.name!r} failed (strict dependencies)"
        failed_deps = [d for d in spec.depends_on if not done[d].ok]
        if failed_deps:
            return f"not attempted: dependency {failed_deps[0]!r} is {done[failed_deps[0]].outcome.value}"
        return None

    async def _bring_up(self, spec: ServiceSpec, overall_end: float | None) -> ServiceOutcome:
        began = time.monotonic()
        end = began + spec.deadline if overall_end is None else min(began + spec.deadline, overall_end)
        if spec.remote:
            self._progress(spec.name, f"remote: probing {spec.address}")
            return await self._wait_healthy(spec, Outcome.REMOTE, began, end)
        first = await self._probe(spec)
        if first.ok:
            return ServiceOutcome(spec, Outcome.ALREADY_RUNNING, first.detail, first.status, first.latency_ms, 1,
                                  _since(began))
        if not first.retryable:
            return _failed(spec, first, 1, began)
        if spec.start is None or self.launcher is None or first.status is not Status.DOWN:
            # Not ours to start (or someone is starting it): wait for it like a remote one.
            return await self._wait_healthy(spec, Outcome.ALREADY_RUNNING, began, end, first=first)
        self._progress(spec.name, "not running: starting it")
        try:
            await self.launcher.start(spec)
        except LaunchError as exc:
            return ServiceOutcome(spec, Outcome.FAILED, str(exc), first.status, None, 1, _since(began))
        return await self._wait_healthy(spec, Outcome.STARTED, began, end, first=first)

    async def _wait_healthy(self, spec: ServiceSpec, success: Outcome, began: float, end: float,
                            first: ProbeResult | None = None) -> ServiceOutcome:
        attempts = 0 if first is None else 1
        last = first
        while True:
            if last is not None:
                delay = backoff_delay(attempts, spec.backoff, self.rng)
                if attempts > spec.retries:
                    return _failed(spec, last, attempts, began, f"gave up after {attempts} probes")
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return _failed(spec, last, attempts, began, f"deadline passed after {attempts} probes")
                await asyncio.sleep(min(delay, remaining))
            exited = self.launcher.exited(spec.name) if self.launcher and success is Outcome.STARTED else None
            if exited:
                return ServiceOutcome(spec, Outcome.FAILED, f"start command {exited}", Status.DOWN, None,
                                      attempts, _since(began))
            last = await self._probe(spec)
            attempts += 1
            if last.ok:
                note = "" if attempts == 1 else f" (healthy after {attempts} probes)"
                return ServiceOutcome(spec, success, last.detail + note, last.status, last.latency_ms, attempts,
                                      _since(began))
            if not last.retryable:
                return _failed(spec, last, attempts, began)
            self._progress(spec.name, f"{last.status.value}: {last.detail}; retrying")


def _failed(spec: ServiceSpec, last: ProbeResult, attempts: int, began: float, why: str = "") -> ServiceOutcome:
    detail = last.detail if not why else f"{why}: {last.detail}"
    if last.status is Status.REJECTED:
        detail += " (not retried: fix the credentials or target in the service URL)"
    return ServiceOutcome(spec, Outcome.FAILED, detail, last.status, last.latency_ms, attempts, _since(began))


def _since(began: float) -> float:
    return (time.monotonic() - began) * 1000


async def _ready(outcome: ServiceOutcome) -> ServiceOutcome:
    return outcome


def _warnings(report: BootReport) -> list[str]:
    warnings = []
    for outcome in report.outcomes:
        if outcome.outcome is Outcome.FAILED:
            kind = "required" if outcome.spec.required else "optional"
            warnings.append(f"{kind} service {outcome.spec.name!r} failed: {outcome.detail}")
        elif outcome.outcome is Outcome.SKIPPED and outcome.spec.enabled:
            warnings.append(f"service {outcome.spec.name!r} skipped: {outcome.detail}")
    return warnings


def boot_summary(report: BootReport | None) -> dict[str, Any]:
    """The boot summary for `/v1/startup/verification` (shape in docs/operations.md)."""
    if report is None:
        return {"status": "not_run", "services": [], "counts": {o.value: 0 for o in Outcome}}
    return report.to_dict()
