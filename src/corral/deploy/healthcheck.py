"""Container health probe: ``python -m corral.deploy.healthcheck``.

Images often lack curl; this asks the running server for ``/health`` on the port its
own config names, so the probe and the server never disagree about the port.
Order: ``CORRAL_HEALTH_URL``, else ``CORRAL_PORT``, else ``server.port`` from the config
at ``CORRAL_CONFIG`` (default ``/etc/corral/corral.yaml``), else 8080.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from corral.deploy.common import CONFIG_PATH, HEALTH_PATH


def health_url(env: Mapping[str, str]) -> str:
    if env.get("CORRAL_HEALTH_URL"):
        return env["CORRAL_HEALTH_URL"]
    scheme, port = "http", 8080
    config_file = Path(env.get("CORRAL_CONFIG", CONFIG_PATH))
    if config_file.is_file():
        from corral.deploy.source import load_source

        server = load_source(config_file, env=env).config.server
        port = server.port
        scheme = "https" if server.tls else "http"
    if env.get("CORRAL_PORT"):
        port = int(env["CORRAL_PORT"])
    return f"{scheme}://127.0.0.1:{port}{HEALTH_PATH}"


def probe(url: str, timeout: float = 4.0) -> tuple[bool, str]:
    # Loopback only: a self-signed certificate must not fail the probe.
    context = ssl._create_unverified_context() if url.startswith("https") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return response.status == 200, f"{url}: {response.status}"
    except OSError as exc:
        return False, f"{url}: {exc}"


def main() -> int:
    try:
        url = health_url(os.environ)
    except Exception as exc:
        print(f"healthcheck: cannot read the config: {exc}", file=sys.stderr)
        return 1
    healthy, detail = probe(url)
    print(detail, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
