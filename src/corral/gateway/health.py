"""Liveness and readiness."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from corral import __version__
from corral.gateway.reload import ReloadStatus


class Readiness:
    """Set once every component has started, cleared when shutdown begins."""

    def __init__(self) -> None:
        self.ready = False


class HealthApi:
    def __init__(self, readiness: Readiness, reload: ReloadStatus) -> None:
        self.readiness = readiness
        self.reload = reload

    async def health(self, _: Request) -> JSONResponse:
        """Up, and which config it serves: ``reload`` has the config's hash and the last
        reload attempt (its error, with file:line:key, when the new config was refused)."""
        return JSONResponse({"status": "ok", "version": __version__, "reload": self.reload.to_json()})

    async def healthz(self, _: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(self, _: Request) -> JSONResponse:
        if not self.readiness.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ready"})
