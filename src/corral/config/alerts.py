"""An alert route (webhook, Slack, Discord): the fleet's alerts and the gateway's budget
alerts are sent through the same routes (`corral.telemetry.alerts`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class AlertRouteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    kind: Literal["slack", "discord", "webhook"] = "webhook"
    url: SecretStr
    events: list[str] = Field(default_factory=lambda: ["policy.*", "node.offline", "session.error"])
    max_per_minute: int = Field(default=30, ge=1)
    retries: int = Field(default=3, ge=0)
    backoff_base_ms: int = Field(default=250, ge=0)
    timeout_seconds: float = Field(default=10.0, gt=0)
