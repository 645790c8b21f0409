"""Who may read ``GET /metrics`` without an admin key: a Prometheus scrape.

Prometheus sends one static credential per scrape job, so it gets a token of its own
(``observability.metrics_token``, also ``CORRAL_METRICS_TOKEN``) that opens this one
route and nothing else; or, on a private network, ``observability.public_metrics: true``
opens the route to anyone. Everything else still needs the gateway's usual credentials.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from corral.config.schema import ObservabilityConfig


class ScrapeAccess:
    def __init__(self, config: ObservabilityConfig) -> None:
        self.public = config.public_metrics
        token = config.metrics_token.get_secret_value() if config.metrics_token is not None else ""
        self._token = token.encode() if token else None

    def allows(self, headers: Mapping[str, str]) -> bool:
        """True when this request may read /metrics on these grounds alone (the caller then
        needs no other credential); False: ask for the usual ones."""
        if self.public:
            return True
        if self._token is None:
            return False
        scheme, _, credential = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(credential.strip().encode(), self._token)
