"""`corral generate launchd`: LaunchAgent plists for macOS.

launchd has no EnvironmentFile: secrets go in the ``.env`` beside the config, which
the config loader reads first. A plist holds no secret.
"""

from __future__ import annotations

import plistlib
from dataclasses import dataclass

ROLES = ("serve", "supervisor", "node")
CONFIG_FILES = {"serve": "corral.yaml", "supervisor": "supervisor.yaml", "node": "node.yaml"}


@dataclass(slots=True)
class MacLayout:
    executable: str
    config_dir: str
    data_dir: str
    log_dir: str
    label_prefix: str = "dev.corral"

    def label(self, role: str) -> str:
        return f"{self.label_prefix}.{role}"

    def config_path(self, role: str) -> str:
        return f"{self.config_dir}/{CONFIG_FILES[role]}"


def render_plist(role: str, layout: MacLayout) -> bytes:
    plist = {
        "Label": layout.label(role),
        "ProgramArguments": [layout.executable, role, "--config", layout.config_path(role)],
        "EnvironmentVariables": {"CORRAL_DATA_DIR": layout.data_dir},
        "WorkingDirectory": layout.data_dir,
        "RunAtLoad": True,
        # Restart after a crash or a failing exit, not after a clean stop.
        "KeepAlive": {"SuccessfulExit": False, "Crashed": True},
        "ThrottleInterval": 5,
        "ExitTimeOut": 40,
        "ProcessType": "Background",
        "StandardOutPath": f"{layout.log_dir}/{role}.log",
        "StandardErrorPath": f"{layout.log_dir}/{role}.err.log",
    }
    return plistlib.dumps(plist, fmt=plistlib.FMT_XML, sort_keys=False)


def render(roles: list[str], layout: MacLayout) -> dict[str, bytes]:
    return {f"{layout.label(role)}.plist": render_plist(role, layout) for role in roles}
