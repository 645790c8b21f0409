"""Liveness and readiness."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from corral import __version__


class Readiness:
    """Set once every component has started, cleared when shutdown begins."""

    def __init__(self) -> None:
        self.ready = False


class HealthApi:
    def __init__(self, readiness: Readiness) -> None:
        self.readiness = readiness

    async def health(self, _: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__})

    async def healthz(self, _: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(self, _: Request) -> JSONResponse:
        if not self.readiness.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ready"})
