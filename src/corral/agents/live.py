"""A run in progress in this process: its events so far, for any number of followers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from corral.agents.events import RunEvent, RunFinished


@dataclass
class LiveRun:
    id: str
    agent: str
    session_id: str | None = None
    events: list[RunEvent] = field(default_factory=list)
    finished: RunFinished | None = None
    task: asyncio.Task[None] | None = None
    sink: Callable[[int, RunEvent], None] | None = None  # told (seq from 1, event) of each event: the fan-out
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _settled: asyncio.Event = field(default_factory=asyncio.Event)

    def publish(self, event: RunEvent) -> None:
        self.events.append(event)
        if self.sink is not None:
            self.sink(len(self.events), event)
        if isinstance(event, RunFinished):
            self.finished = event
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    def settle(self) -> None:
        """The run's outcome is in the store (published events may come slightly earlier)."""
        self._settled.set()

    async def follow(self) -> AsyncIterator[RunEvent]:
        """Every event from the start, then new ones as they come, until the run finishes."""
        index = 0
        while True:
            wake = self._wake  # taken before reading: a publish after this point sets it
            while index < len(self.events):
                event = self.events[index]
                index += 1
                yield event
                if isinstance(event, RunFinished):
                    return
            await wake.wait()

    async def wait(self, within: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._settled.wait(), within)
        except TimeoutError:
            return False
        return True
