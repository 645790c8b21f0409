"""The result of loading a config: the validated model and how it came to be."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from corral.config.schema import CorralConfig


@dataclass(slots=True)
class LoadedConfig:
    config: CorralConfig
    path: Path | None = None  # None in zero-config mode
    zero_config: bool = False
    notes: list[str] = field(default_factory=list)  # human notes: what env changed, what was dropped
    env: Mapping[str, str] = field(default_factory=dict)  # the environment used (real + .env)

    @property
    def passthrough_providers(self) -> frozenset[str]:
        """Enabled providers that serve any ``<provider>/<model>`` name."""
        return frozenset(
            name for name, p in self.config.providers.items() if p.passthrough and p.enabled
        )
