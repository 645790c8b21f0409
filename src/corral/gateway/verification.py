"""`GET /v1/startup/verification`: the provider verification report (and the boot
summary when `corral up` brought the stack up).

Verification runs once at startup. Normally in the background, so readiness is not
delayed by slow providers; with `verification.strict` (`corral serve
--strict-providers`) startup waits for it and refuses to start when a required
provider fails."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from corral.boot.manager import boot_summary
from corral.config.schema import CorralConfig
from corral.gateway.auth import Authenticator
from corral.gateway.http import json_response
from corral.llm.router import Router
from corral.llm.verify import VerificationReport, verify_providers

log = logging.getLogger("corral.verification")


class StartupRefused(RuntimeError):
    pass


class Verification:
    def __init__(self, config: CorralConfig, router: Router, *, boot_summary: dict[str, Any] | None = None) -> None:
        self.config = config
        self.router = router
        self.boot_summary = boot_summary  # what `corral up` found, when it started this server
        self.report: VerificationReport | None = None
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def _mark_required(self) -> None:
        """In strict mode with no provider marked `required`, every enabled one is."""
        providers = self.config.providers
        if self.config.verification.strict and not any(p.required for p in providers.values()):
            for p in providers.values():
                p.required = True

    async def run(self) -> None:
        try:
            self.report = await verify_providers(self.router.providers, self.config)
        except Exception as exc:  # never let verification itself take the server down
            log.exception("provider verification failed")
            self.error = f"{type(exc).__name__}: {exc}"
            return
        for check in self.report.providers:
            if not check.ok:
                log.warning("provider %s: %s (%s)", check.name, check.status, check.detail)

    async def start(self) -> None:
        if not self.config.verification.enabled:
            return
        self._mark_required()
        if self.config.verification.strict:
            await self.run()
            failed = self.report.required_failed if self.report else ["(verification did not run)"]
            if failed:
                raise StartupRefused(f"required providers failed verification: {', '.join(failed)}")
            return
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        if self._task and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def to_json(self) -> dict[str, Any]:
        if not self.config.verification.enabled:
            body: dict[str, Any] = {"version": 1, "status": "disabled", "providers": []}
        elif self.report is None:
            body = {"version": 1, "status": "failed" if self.error else "pending", "error": self.error,
                    "providers": []}
        else:
            body = self.report.to_json()
        body["services"] = self.boot_summary if self.boot_summary is not None else boot_summary(None)
        return body


class VerificationApi:
    def __init__(self, verification: Verification, authenticator: Authenticator) -> None:
        self.verification = verification
        self.authenticator = authenticator

    async def report(self, request: Request) -> Response:
        await self.authenticator.authenticate(request)
        return json_response(self.verification.to_json())
