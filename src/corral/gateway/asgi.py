"""Entry point for `uvicorn --workers N`: each worker process rebuilds the app from
the same arguments the parent was given (`ServeArgs`, passed in one environment
variable, since uvicorn starts the workers by import string)."""

from __future__ import annotations

import json
import os
import signal
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
    watch: bool = False  # `--watch`: each worker watches the config files itself

    def to_env(self) -> str:
        return json.dumps(asdict(self))


def app_from_env() -> Starlette:
    from corral.gateway.app import create_app
    from corral.gateway.reload import ConfigSource, config_hash, watched_files

    ignore_sighup_until_started()
    args = ServeArgs(**json.loads(os.environ.get(ENV, "{}")))
    source = ConfigSource(args.config, args.model, args.strict_providers, args.watch)
    loaded = source.load()
    loaded.config.server.workers = args.workers
    return create_app(loaded.config, notes=loaded.notes, boot_summary=args.boot_summary, server_process=True,
                      shared_counters=args.shared_counters, source=source, config_hash=config_hash(loaded),
                      config_files=watched_files(loaded))


def ignore_sighup_until_started() -> None:
    """SIGHUP reloads the config once the app has started (`ConfigReloader`); before that
    it would end the process (the default action), so it is ignored."""
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
