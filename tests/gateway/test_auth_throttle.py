"""Failed authentication is slowed down per client address, counted, and bounded in memory."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry

from corral.gateway.auth_throttle import AuthFailureCounter, FailedAuthThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_up_to_the_limit_are_not_delayed_then_the_delay_doubles_to_its_cap() -> None:
    throttle = FailedAuthThrottle(limit=3, base_delay=0.5, max_delay=3.0, clock=Clock())
    delays = [throttle.failed("10.0.0.1") for _ in range(8)]
    assert delays == [0.0, 0.0, 0.0, 0.5, 1.0, 2.0, 3.0, 3.0]
    assert throttle.failures("10.0.0.1") == 8


def test_each_address_is_counted_on_its_own_and_a_success_forgets_it() -> None:
    throttle = FailedAuthThrottle(limit=1, base_delay=1.0, clock=Clock())
    assert [throttle.failed("a"), throttle.failed("a"), throttle.failed("b")] == [0.0, 1.0, 0.0]
    throttle.succeeded("a")
    assert throttle.failures("a") == 0 and throttle.failed("a") == 0.0
    assert throttle.failures("b") == 1


def test_the_window_starts_over_once_it_has_passed() -> None:
    clock = Clock()
    throttle = FailedAuthThrottle(limit=2, window_seconds=60, base_delay=1.0, clock=clock)
    for _ in range(4):
        throttle.failed("a")
    assert throttle.failed("a") == 4.0
    clock.now += 59.9
    assert throttle.failed("a") == 8.0
    clock.now += 0.2  # 60.1 s after the window opened
    assert throttle.failures("a") == 0
    assert throttle.failed("a") == 0.0 and throttle.failures("a") == 1


def test_memory_is_bounded_by_dropping_the_least_recently_failing_address() -> None:
    throttle = FailedAuthThrottle(limit=0, base_delay=1.0, max_clients=100, clock=Clock())
    throttle.failed("keeper")
    for n in range(1000):
        throttle.failed(f"10.1.{n // 256}.{n % 256}")
        if n % 50 == 0:
            throttle.failed("keeper")  # still failing: kept
    assert len(throttle) == 100
    assert throttle.failures("keeper") == 21
    assert throttle.failures("10.1.0.0") == 0  # dropped long ago


def test_failures_are_counted_in_prometheus_with_whether_they_were_throttled() -> None:
    registry = CollectorRegistry()
    throttle = FailedAuthThrottle(limit=2, observer=AuthFailureCounter(registry), clock=Clock())
    for _ in range(5):
        throttle.failed("a")
    assert registry.get_sample_value("corral_auth_failures_total", {"throttled": "false"}) == 2
    assert registry.get_sample_value("corral_auth_failures_total", {"throttled": "true"}) == 3


async def test_penalize_waits_out_the_delay() -> None:
    throttle = FailedAuthThrottle(limit=1, base_delay=0.2, max_delay=0.2)
    started = time.perf_counter()
    await throttle.penalize("a")
    first = time.perf_counter() - started
    await throttle.penalize("a")
    second = time.perf_counter() - started - first
    assert first < 0.1 and 0.19 <= second < 1.0


@pytest.mark.parametrize("kwargs", [{"limit": -1}, {"window_seconds": 0}, {"base_delay": 2, "max_delay": 1},
                                    {"max_clients": 0}])
def test_nonsense_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FailedAuthThrottle(**kwargs)  # type: ignore[arg-type]
