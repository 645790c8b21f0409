"""The `agents:` section. Owned by the agent runtime (`corral.agents`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    model: str
    instructions: str | None = None
    instructions_file: str | None = None
    tools: list[str] = Field(default_factory=list)
    sub_agents: list[str] = Field(default_factory=list)
    output_schema: dict[str, Any] | None = None
    max_iterations: int = Field(default=10, ge=1)
    params: dict[str, Any] = Field(default_factory=dict)
    visibility: Literal["public", "internal"] = "public"
