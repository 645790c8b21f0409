"""Entry point for `uvicorn --workers N`: each worker process rebuilds the app from
the same arguments the parent was given (`ServeArgs`, passed in one environment
variable, since uvicorn starts the workers by import string)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any

from starlette.applications import Starlette

ENV = "CORRAL_SERVE_ARGS"


@dataclass(frozen=True)
class ServeArgs:
    config: str | None = None
    model: str | None = None
    strict_providers: bool = False
    boot_summary: dict[str, Any] | None = None
    workers: int = 1  # `--workers` (the config file may say otherwise)
    shared_counters: str | None = None  # the SQLite file the workers share limits through (no Redis)

    def to_env(self) -> str:
        return json.dumps(asdict(self))


def app_from_env() -> Starlette:
    from corral.config.loader import load_config
    from corral.gateway.app import create_app

    args = ServeArgs(**json.loads(os.environ.get(ENV, "{}")))
    loaded = load_config(args.config, model=args.model)
    if args.strict_providers:
        loaded.config.verification.strict = True
    loaded.config.server.workers = args.workers
    return create_app(loaded.config, notes=loaded.notes, boot_summary=args.boot_summary, server_process=True,
                      shared_counters=args.shared_counters)
