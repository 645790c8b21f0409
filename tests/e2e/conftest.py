"""Fixtures for tests that run `corral` as real processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from corral.testing.process import ServeProcess


@pytest.fixture
def serve_processes() -> Iterator[list[ServeProcess]]:
    """Processes appended here are killed at the end of the test, whatever happens."""
    procs: list[ServeProcess] = []
    yield procs
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(timeout=10)
