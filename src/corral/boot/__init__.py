"""Boot and health: service specs, real probes, the boot manager and status checks.

The public surface: `effective_services(config, env)` resolves the services a config
depends on; `BootManager(...).run()` brings them up in dependency order;
`check_services(...)` probes each once; `boot_summary(report)` is the JSON-able
summary served in `/v1/startup/verification`.
"""

from corral.boot.launch import Launcher, LaunchError
from corral.boot.manager import (
    BootManager,
    BootReport,
    Outcome,
    ServiceOutcome,
    boot_summary,
)
from corral.boot.probes import ProbeResult, Status, probe
from corral.boot.specs import ServiceSpec, ServiceSpecError, effective_services, topological_levels
from corral.boot.status import ServiceCheck, check_services, probe_client

__all__ = [
    "BootManager",
    "BootReport",
    "LaunchError",
    "Launcher",
    "Outcome",
    "ProbeResult",
    "ServiceCheck",
    "ServiceOutcome",
    "ServiceSpec",
    "ServiceSpecError",
    "Status",
    "boot_summary",
    "check_services",
    "effective_services",
    "probe",
    "probe_client",
    "topological_levels",
]
