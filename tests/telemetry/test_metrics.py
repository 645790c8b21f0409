"""`GatewayMetrics` counts per-call metrics without prometheus_client's locks and
publishes them through a collector at scrape time: the text must be what
prometheus_client itself renders for the same calls."""

from __future__ import annotations

import random
import re
import time

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from corral.telemetry.metrics import GatewayMetrics

_CREATED = re.compile(r"^(\S+_created\{[^}]*\}) \S+$", re.MULTILINE)


def feed(metrics: GatewayMetrics, seed: int, calls: int = 400) -> None:
    rng = random.Random(seed)
    for _ in range(calls):
        status = rng.choice([200, 200, 200, 429, 502, 499])
        error = None if status == 200 else rng.choice(["rate_limit_exceeded", "upstream_unavailable"])
        tokens = (rng.randrange(0, 500), rng.randrange(0, 50), rng.choice([0, 0, 7]), 0) if rng.random() < 0.8 else None
        surface = rng.choice(["openai", "anthropic", "responses"])
        metrics.observe_call(surface=surface, model=rng.choice(["a", "b"]), status=status,
                             seconds=rng.expovariate(1.0) * rng.choice([0.01, 1, 100]),
                             ttft_seconds=rng.random() if rng.random() < 0.3 else None, tokens=tokens,
                             error_type=error, cost_usd=rng.random() / 1000 if rng.random() < 0.5 else None)
        metrics.observe_overhead(surface, rng.choice([0.0, 0.0001, 0.00025, rng.random() / 100, 3.0]))


def without_created_values(text: str) -> str:
    return _CREATED.sub(r"\1 <created>", text)


def test_published_text_is_what_prometheus_client_renders_for_the_same_calls() -> None:
    counted, reference = GatewayMetrics(write_through=False), GatewayMetrics(write_through=True)
    for metrics in (counted, reference):
        feed(metrics, seed=7)
    counted_text, reference_text = counted.render()[0].decode(), reference.render()[0].decode()
    assert "corral_time_to_first_token_seconds_bucket" in reference_text  # every family was fed
    assert "corral_cost_usd_total" in reference_text and "corral_errors_total" in reference_text
    assert without_created_values(counted_text) == without_created_values(reference_text)

    for metrics in (counted, reference):  # and again after more calls (totals, not deltas)
        feed(metrics, seed=8, calls=50)
    assert without_created_values(counted.render()[0].decode()) == without_created_values(
        reference.render()[0].decode())


def test_the_registry_reads_the_current_counts_through_public_collector_api() -> None:
    metrics = GatewayMetrics(write_through=False)
    metrics.observe_call(surface="openai", model="m", status=200, seconds=0.2, tokens=(3, 4, 0, 0))
    first = generate_latest(metrics.registry).decode()  # no render(), no publish step: a collector
    assert 'corral_requests_total{model="m",status="200",surface="openai"} 1.0' in first
    assert 'corral_tokens_total{kind="output",model="m"} 4.0' in first
    assert 'kind="cached_input"' not in first  # a kind never counted has no series
    metrics.observe_call(surface="openai", model="m", status=200, seconds=0.2, tokens=(3, 4, 0, 0))
    second = generate_latest(metrics.registry).decode()
    assert 'corral_requests_total{model="m",status="200",surface="openai"} 2.0' in second
    assert 'corral_request_duration_seconds_bucket{le="0.25",model="m",surface="openai"} 2.0' in second
    assert 'corral_request_duration_seconds_sum{model="m",surface="openai"} 0.4' in second


def test_every_family_is_described_once_so_a_clash_is_refused() -> None:
    import pytest
    from prometheus_client import Counter

    metrics = GatewayMetrics(write_through=False)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("corral_requests", "again", registry=metrics.registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("corral_overhead_seconds_count", "again", registry=metrics.registry)


def test_a_series_is_created_at_its_first_observation_not_at_the_scrape() -> None:
    metrics = GatewayMetrics(write_through=False)
    metrics.observe_call(surface="openai", model="m", status=200, seconds=0.2)
    before_ttft = time.time()
    metrics.observe_call(surface="openai", model="m", status=200, seconds=0.2, ttft_seconds=0.05)
    after_ttft = time.time()
    time.sleep(0.05)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics.render()[0].decode())
               for s in family.samples}
    created = samples[("corral_time_to_first_token_seconds_created", (("model", "m"), ("surface", "openai")))]
    assert before_ttft <= created <= after_ttft
    assert samples[("corral_time_to_first_token_seconds_count", (("model", "m"), ("surface", "openai")))] == 1.0
    assert samples[("corral_request_duration_seconds_count", (("model", "m"), ("surface", "openai")))] == 2.0
    assert samples[("corral_request_duration_seconds_bucket", (("le", "0.1"), ("model", "m"),
                                                                ("surface", "openai")))] == 0.0
    assert samples[("corral_request_duration_seconds_bucket", (("le", "0.25"), ("model", "m"),
                                                                ("surface", "openai")))] == 2.0


def test_write_through_is_the_default_only_in_multiprocess_mode() -> None:
    assert GatewayMetrics().write_through is False  # the test process has no PROMETHEUS_MULTIPROC_DIR
