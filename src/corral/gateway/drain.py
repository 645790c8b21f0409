"""Streams ended cleanly when the server shuts down.

uvicorn waits up to ``server.shutdown_timeout`` for in-flight responses after SIGTERM,
then cancels what is left: a bare connection cut, a traceback per stream, and the call
unbilled. `Drain` ends them itself a little before that: when the server starts
shutting down (`begin`), every stream still running at ``grace`` seconds is cut; the
stream's source (`CallPipeline.stream`) bills what it relayed and sends an error event
in its surface's format, and the response ends normally.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger("corral.drain")

MARGIN = 0.5  # seconds before uvicorn's own cut, to bill and write the error event


class StreamCut(Exception):
    """Thrown into a stream's source when the shutdown deadline cut it."""


class Drain:
    def __init__(self, shutdown_timeout: float) -> None:
        self.grace = max(0.0, shutdown_timeout - min(MARGIN, shutdown_timeout / 2))
        self.draining = False
        self._streams: set[asyncio.Task[Any]] = set()
        self._cut: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, task: asyncio.Task[Any]) -> None:
        self._streams.add(task)

    def forget(self, task: asyncio.Task[Any]) -> None:
        self._streams.discard(task)
        self._cut.discard(task)

    def was_cut(self, task: asyncio.Task[Any] | None) -> bool:
        return task is not None and task in self._cut

    def begin(self) -> None:
        """The server stopped accepting requests: streams have ``grace`` seconds left."""
        if self.draining:
            return
        self.draining = True
        if self._streams:
            log.info("shutting down: %d streams have %.1fs to finish", len(self._streams), self.grace)
        self._timer = asyncio.get_running_loop().call_later(self.grace, self._cut_all)

    def _cut_all(self) -> None:
        for task in list(self._streams):
            if not task.done():
                self._cut.add(task)
                task.cancel()

    def install_signals(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """Also `begin` on SIGTERM/SIGINT, before passing the signal on to the handler the
        server installed (uvicorn's); returns the function that puts that handler back."""
        previous: dict[int, Any] = {}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            loop.call_soon_threadsafe(self.begin)
            handler = previous.get(signum)
            if callable(handler):
                handler(signum, frame)

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, on_signal)

        def restore() -> None:
            for sig, handler in previous.items():
                if signal.getsignal(sig) is on_signal:
                    signal.signal(sig, handler)

        return restore
