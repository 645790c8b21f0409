"""The `services:` section (Postgres, Redis, vector stores... that Corral depends on).
Owned by the boot manager (`corral.boot`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ServiceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["postgres", "redis", "qdrant", "chroma", "http", "tcp", "command"]
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    url: str | None = None
    required: bool = True
    remote: bool = False
    depends_on: list[str] = Field(default_factory=list)
