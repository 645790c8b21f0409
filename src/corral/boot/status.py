"""One probe of every service, in parallel: what `corral status`, `corral monitor` and
`corral doctor` show."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx

from corral.boot.containers import ContainerState, container_states
from corral.boot.probes import ProbeResult, Status, probe
from corral.boot.processes import ProcessTable
from corral.boot.specs import ServiceSpec


@dataclass(frozen=True)
class ServiceCheck:
    spec: ServiceSpec
    result: ProbeResult | None  # None: disabled, not probed
    container: ContainerState | None = None  # a compose service: its container, beside the probe
    process: str | None = None  # a command `corral up` started: "pid N running" / "pid N exited"

    @property
    def runs_as(self) -> str | None:
        if self.container is not None:
            return f"{self.container.summary}: {self.container.detail}" if self.container.detail \
                else self.container.summary
        return self.process

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
            "container": self.container.to_dict() if self.container else None,
            "process": self.process,
        }


async def check_services(specs: list[ServiceSpec], *, http: httpx.AsyncClient, docker: str = "docker",
                         processes: ProcessTable | None = None) -> list[ServiceCheck]:
    """Probe every enabled service; beside each probe, the container state of compose
    services and the process state of commands `corral up` started (from ``processes``)."""
    async def one(spec: ServiceSpec) -> ProbeResult | None:
        return await probe(spec, http=http) if spec.enabled else None

    states_job = asyncio.ensure_future(container_states(specs, docker=docker))
    results = await asyncio.gather(*(one(s) for s in specs))
    states = await states_job
    checks = []
    for spec, result in zip(specs, results, strict=True):
        record = processes.get(spec.name) if processes is not None else None
        process = None
        if record is not None:
            process = f"pid {record.pid} " + ("running" if processes and processes.alive(record) else "exited")
        checks.append(ServiceCheck(spec, result, states.get(spec.name), process))
    return checks


def probe_client() -> httpx.AsyncClient:
    # Probes target exact hosts: an HTTP(S)_PROXY from the environment must not reroute them.
    return httpx.AsyncClient(trust_env=False, follow_redirects=False)


__all__ = ["ServiceCheck", "Status", "check_services", "probe_client"]
