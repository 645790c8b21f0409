"""One probe of every service, in parallel: what `corral status`, `corral monitor` and
`corral doctor` show."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx

from corral.boot.probes import ProbeResult, Status, probe
from corral.boot.specs import ServiceSpec


@dataclass(frozen=True)
class ServiceCheck:
    spec: ServiceSpec
    result: ProbeResult | None  # None: disabled, not probed

    @property
    def status(self) -> str:
        return self.result.status.value if self.result else "disabled"

    @property
    def failing(self) -> bool:
        """A required, enabled service that is not up."""
        return self.spec.enabled and self.spec.required and not (self.result and self.result.ok)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "kind": self.spec.health_kind,
            "type": self.spec.type,
            "status": self.status,
            "latency_ms": self.result.latency_ms if self.result else None,
            "detail": self.result.detail if self.result else "disabled",
            "address": self.spec.address,
            "required": self.spec.required,
            "remote": self.spec.remote,
        }


async def check_services(specs: list[ServiceSpec], *, http: httpx.AsyncClient) -> list[ServiceCheck]:
    async def one(spec: ServiceSpec) -> ServiceCheck:
        if not spec.enabled:
            return ServiceCheck(spec, None)
        return ServiceCheck(spec, await probe(spec, http=http))

    return list(await asyncio.gather(*(one(spec) for spec in specs)))


def probe_client() -> httpx.AsyncClient:
    # Probes target exact hosts: an HTTP(S)_PROXY from the environment must not reroute them.
    return httpx.AsyncClient(trust_env=False, follow_redirects=False)


__all__ = ["ServiceCheck", "Status", "check_services", "probe_client"]
