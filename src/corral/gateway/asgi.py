"""Entry point for `uvicorn --workers N`: each worker process rebuilds the app from
the same arguments the parent was given (passed in one environment variable)."""

from __future__ import annotations

import json
import os

from starlette.applications import Starlette

ENV = "CORRAL_SERVE_ARGS"


def app_from_env() -> Starlette:
    from corral.cli.serve import load_for_serve
    from corral.gateway.app import create_app

    args = json.loads(os.environ.get(ENV, "{}"))
    loaded = load_for_serve(args.get("config"), model=args.get("model"))
    if args.get("strict_providers"):
        loaded.config.verification.strict = True
    return create_app(loaded.config, notes=loaded.notes, server_process=True)
