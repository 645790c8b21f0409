"""Jittered exponential backoff for reconnects (100 ms to 60 s by default)."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, minimum: float = 0.1, maximum: float = 60.0, factor: float = 2.0,
                 jitter: float = 0.25, rng: random.Random | None = None) -> None:
        self.minimum, self.maximum, self.factor, self.jitter = minimum, maximum, factor, jitter
        self._rng = rng or random.Random()
        self._attempt = 0

    def next(self) -> float:
        base = min(self.maximum, self.minimum * self.factor ** self._attempt)
        self._attempt += 1
        spread = base * self.jitter
        return max(self.minimum, min(self.maximum, base + self._rng.uniform(-spread, spread)))

    def reset(self) -> None:
        self._attempt = 0
