"""Failed authentication, slowed down per client address.

`FailedAuthThrottle` counts the failed attempts of each client address in a window.
Past ``limit`` failures, each further failure of that address is answered only after a
delay that doubles per failure (``base_delay``, capped at ``max_delay``), which turns
guessing keys into a crawl while a client that mistyped its key once is not slowed at
all. A success forgets the address. At most ``max_clients`` addresses are remembered
(the least recently failing are dropped first), so a flood of addresses costs bounded
memory. Every failure is reported to an observer (`AuthFailureCounter`: a Prometheus
counter in the gateway's registry)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter


class AuthFailureObserver(Protocol):
    def failed(self, *, throttled: bool) -> None: ...


class AuthFailureCounter:
    """``corral_auth_failures_total{throttled="true|false"}``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.counter = Counter("corral_auth_failures", "Failed authentications; throttled: answered after a "
                               "delay because the client address failed too often.", ["throttled"],
                               registry=registry)
        self._children = {flag: self.counter.labels(throttled="true" if flag else "false") for flag in (True, False)}

    def failed(self, *, throttled: bool) -> None:
        self._children[throttled].inc()


@dataclass(slots=True)
class _Failures:
    count: int
    since: float  # when the window of these failures started


class FailedAuthThrottle:
    def __init__(self, *, limit: int = 10, window_seconds: float = 60.0, base_delay: float = 0.25,
                 max_delay: float = 10.0, max_clients: int = 10_000, observer: AuthFailureObserver | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 0 or window_seconds <= 0 or base_delay < 0 or max_delay < base_delay or max_clients < 1:
            raise ValueError("limit >= 0, window_seconds > 0, 0 <= base_delay <= max_delay, max_clients >= 1")
        self.limit = limit
        self.window_seconds = window_seconds
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_clients = max_clients
        self.observer = observer
        self._clock = clock
        self._clients: OrderedDict[str, _Failures] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clients)

    def failures(self, client: str) -> int:
        """The failures of this address in its current window."""
        entry = self._clients.get(client)
        if entry is None or self._clock() - entry.since >= self.window_seconds:
            return 0
        return entry.count

    def failed(self, client: str) -> float:
        """Count a failed attempt; the seconds to wait before answering it."""
        now = self._clock()
        entry = self._clients.get(client)
        if entry is None or now - entry.since >= self.window_seconds:
            entry = _Failures(0, now)
            self._clients[client] = entry
        entry.count += 1
        self._clients.move_to_end(client)
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
        over = entry.count - self.limit
        delay = 0.0 if over <= 0 else min(self.max_delay, self.base_delay * 2 ** min(over - 1, 32))
        if self.observer is not None:
            self.observer.failed(throttled=delay > 0)
        return delay

    def succeeded(self, client: str) -> None:
        """An authenticated request: the address starts over."""
        if self._clients:
            self._clients.pop(client, None)

    async def penalize(self, client: str) -> None:
        """`failed`, then wait out its delay (call it before sending the 401)."""
        delay = self.failed(client)
        if delay > 0:
            await asyncio.sleep(delay)
