"""Prometheus metrics, one `CollectorRegistry` per app (never the process-global one,
so a test process can build many apps).

With ``--workers N`` each worker is its own process; `prepare_multiprocess` points
prometheus_client's multiprocess mode at a fresh directory *before* the workers start,
and `/metrics` then sums what every live worker wrote there (see docs/observability.md).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from bisect import bisect_left
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as prometheus_values

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, float("inf"))
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, float("inf"))


@dataclass(frozen=True, slots=True)
class DeploymentHealth:
    alias: str
    deployment: str  # "<provider>/<model>"
    healthy: bool
    cooldown_seconds: float  # remaining; 0 when healthy


def multiprocess_dir() -> str | None:
    """The directory workers share, when multiprocess mode is really on in this process
    (prometheus_client decides that once, at import, from the environment)."""
    path = os.environ.get(MULTIPROC_ENV)
    if path and prometheus_values.ValueClass is not prometheus_values.MutexValue:
        return path
    return None


def prepare_multiprocess(workers: int, environ: MutableMapping[str, str] | None = None) -> str | None:
    """Called by `corral serve` before it starts N > 1 workers. Uses the directory the
    operator set, else a fresh temporary one; stale files from an earlier run would add
    old counts, so a directory we own starts empty."""
    env = os.environ if environ is None else environ
    if workers <= 1:
        return None
    path = env.get(MULTIPROC_ENV)
    if not path:
        path = tempfile.mkdtemp(prefix="corral-prometheus-")
        env[MULTIPROC_ENV] = path
    os.makedirs(path, exist_ok=True)
    return path


def cleanup_multiprocess(path: str | None) -> None:
    if path and os.path.basename(path).startswith("corral-prometheus-"):
        shutil.rmtree(path, ignore_errors=True)


_TOKEN_KINDS = ("input", "output", "cached_input", "reasoning")


class _Total:
    """A counter series' running total, kept here and copied into its prometheus child
    at scrape time: no lock per increment (the gateway is one event-loop thread)."""

    __slots__ = ("child", "value")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.value = 0.0

    def publish(self) -> None:
        self.child._value.set(self.value)


class _Buckets:
    """A histogram series' bucket counts (non-cumulative, as prometheus_client keeps them)
    and sum, copied into its child at scrape time. The sum is accumulated in the order of
    the observations, so it is the same float prometheus_client would have."""

    __slots__ = ("bounds", "child", "counts", "total")

    def __init__(self, child: Any, bounds: tuple[float, ...]) -> None:
        self.child = child
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bucket with value <= bound
        self.total += value

    def publish(self) -> None:
        self.child._sum.set(self.total)
        for bucket, count in zip(self.child._buckets, self.counts, strict=True):
            bucket.set(float(count))


class _Shape:
    """The series one kind of call (surface, model, status, error type) adds to; those
    it may not touch yet (time to first token, each token kind, cost) are created when it
    first does, so a series appears (with its ``_created``) at its first observation."""

    __slots__ = ("cost", "errors", "latency", "model", "requests", "surface", "tokens", "ttft")

    def __init__(self, surface: str, model: str, requests: _Total, latency: _Buckets, errors: _Total | None) -> None:
        self.surface = surface
        self.model = model
        self.requests = requests
        self.latency = latency
        self.errors = errors
        self.ttft: _Buckets | None = None
        self.tokens: list[_Total | None] = [None] * len(_TOKEN_KINDS)
        self.cost: _Total | None = None


class GatewayMetrics:
    """Every metric the gateway publishes, plus the seams other components feed:

    - ``limit_rejections.labels(limit=..., scope=...).inc()`` (limits and budgets),
    - ``watch_queue(name, depth)`` (batch writers),
    - ``deployments`` (a callable listing `DeploymentHealth`; the router's state).

    The per-call metrics (requests, latency, overhead, time to first token, tokens, cost,
    errors) are fed through `observe_call` and `observe_overhead` only. In one process
    they are counted in plain Python objects and copied into the prometheus_client
    metrics when `/metrics` renders (`publish`): prometheus_client takes a lock per
    increment, seven or eight per call. In multiprocess mode every increment is written
    through at once instead, because a scrape answered by another worker reads this
    worker's values from the shared directory.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, write_through: bool | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.write_through = multiprocess_dir() is not None if write_through is None else write_through
        self._children: dict[tuple[Any, ...], Any] = {}  # as many as the metrics' own label sets
        self._series: dict[tuple[Any, ...], _Total | _Buckets] = {}
        self._shapes: dict[tuple[str, str, int, str | None], _Shape] = {}
        self._overheads: dict[str, _Buckets] = {}
        r = self.registry
        self.requests = Counter("corral_requests", "Model calls by API surface, model and HTTP status.",
                                ["surface", "model", "status"], registry=r)
        self.latency = Histogram("corral_request_duration_seconds",
                                 "Time from request arrival to the last byte (streams: to the last chunk).",
                                 ["surface", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.overhead = Histogram("corral_overhead_seconds",
                                  "Time spent in Corral before the response started, minus upstream time "
                                  "(the x-corral-overhead-ms header).", ["surface"], buckets=OVERHEAD_BUCKETS,
                                  registry=r)
        self.ttft = Histogram("corral_time_to_first_token_seconds", "Streams: time to the first upstream event.",
                              ["surface", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("corral_tokens", "Tokens by model and kind (input, output, cached_input, reasoning).",
                              ["model", "kind"], registry=r)
        self.cost = Counter("corral_cost_usd", "Spend in US dollars by model.", ["model"], registry=r)
        self.errors = Counter("corral_errors", "Failed calls by surface, model and error type.",
                              ["surface", "model", "type"], registry=r)
        self.limit_rejections = Counter("corral_limit_rejections", "Requests refused by a rate limit or budget.",
                                        ["limit", "scope"], registry=r)
        self.deployment_healthy = Gauge("corral_deployment_healthy", "1 if a deployment is in service, 0 while "
                                        "it cools down.", ["alias", "deployment"], registry=r,
                                        multiprocess_mode="livemin")
        self.deployment_cooldown = Gauge("corral_deployment_cooldown_seconds", "Seconds left in a deployment's "
                                         "cooldown.", ["alias", "deployment"], registry=r, multiprocess_mode="livemax")
        self.queue_depth = Gauge("corral_batch_queue_depth", "Records waiting in a batch writer's queue.",
                                 ["writer"], registry=r, multiprocess_mode="livesum")
        self.deployments: Callable[[], Iterable[DeploymentHealth]] | None = None
        self._queues: dict[str, Callable[[], int | None]] = {}

    def watch_queue(self, name: str, depth: Callable[[], int | None]) -> None:
        """``depth`` returns None while the queue does not exist (no series is published)."""
        self._queues[name] = depth

    def observe_call(
        self,
        *,
        surface: str,
        model: str,
        status: int,
        seconds: float,
        ttft_seconds: float | None = None,
        tokens: tuple[int, int, int, int] | None = None,  # input, output, cached_input, reasoning
        error_type: str | None = None,
        cost_usd: float | None = None,
    ) -> None:
        if self.write_through:
            self._observe_through(surface, model, status, seconds, ttft_seconds, tokens, error_type, cost_usd)
            return
        shape = self._shapes.get((surface, model, status, error_type))
        if shape is None:
            shape = self._shape(surface, model, status, error_type)
        shape.requests.value += 1
        shape.latency.observe(seconds)
        if ttft_seconds is not None:
            if shape.ttft is None:
                shape.ttft = self._buckets(self.ttft, LATENCY_BUCKETS, surface, model)
            shape.ttft.observe(ttft_seconds)
        if error_type is not None:
            assert shape.errors is not None
            shape.errors.value += 1
        if tokens is not None:
            totals = shape.tokens
            for i, count in enumerate(tokens):
                if count:
                    total = totals[i]
                    if total is None:
                        total = totals[i] = self._total(self.tokens, model, _TOKEN_KINDS[i])
                    total.value += count
        if cost_usd:
            if shape.cost is None:
                shape.cost = self._total(self.cost, model)
            shape.cost.value += cost_usd

    def observe_overhead(self, surface: str, seconds: float) -> None:
        """``corral_overhead_seconds``: Corral's own time before the response started."""
        if self.write_through:
            self._child(self.overhead, surface).observe(seconds)
            return
        series = self._overheads.get(surface)
        if series is None:
            series = self._overheads[surface] = self._buckets(self.overhead, OVERHEAD_BUCKETS, surface)
        series.observe(seconds)

    def publish(self) -> None:
        """Copy the per-call metrics into prometheus_client's (`render` does it first)."""
        for series in self._series.values():
            series.publish()

    def _shape(self, surface: str, model: str, status: int, error_type: str | None) -> _Shape:
        errors = self._total(self.errors, surface, model, error_type) if error_type is not None else None
        shape = _Shape(surface, model, self._total(self.requests, surface, model, str(status)),
                       self._buckets(self.latency, LATENCY_BUCKETS, surface, model), errors)
        self._shapes[(surface, model, status, error_type)] = shape
        return shape

    def _total(self, metric: Any, *values: str) -> _Total:
        key = (id(metric), *values)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = _Total(metric.labels(*values))
        assert isinstance(found, _Total)
        return found

    def _buckets(self, metric: Any, bounds: tuple[float, ...], *values: str) -> _Buckets:
        key = (id(metric), *values)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = _Buckets(metric.labels(*values), bounds)
        assert isinstance(found, _Buckets)
        return found

    def _observe_through(self, surface: str, model: str, status: int, seconds: float, ttft_seconds: float | None,
                         tokens: tuple[int, int, int, int] | None, error_type: str | None,
                         cost_usd: float | None) -> None:
        child = self._child
        child(self.requests, surface, model, str(status)).inc()
        child(self.latency, surface, model).observe(seconds)
        if ttft_seconds is not None:
            child(self.ttft, surface, model).observe(ttft_seconds)
        if error_type is not None:
            child(self.errors, surface, model, error_type).inc()
        if tokens is not None:
            for kind, count in zip(_TOKEN_KINDS, tokens, strict=True):
                if count:
                    child(self.tokens, model, kind).inc(count)
        if cost_usd:
            child(self.cost, model).inc(cost_usd)

    def _child(self, metric: Any, *values: str) -> Any:
        """`metric.labels(*values)`, looked up once: prometheus_client takes a lock and
        builds the label tuple on every call."""
        key = (id(metric), *values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def refresh(self) -> None:
        """Gauges fed by callbacks, read at scrape time (never on the request path)."""
        for name, read in self._queues.items():
            depth = read()
            if depth is not None:
                self.queue_depth.labels(name).set(depth)
        if self.deployments is not None:
            for health in self.deployments():
                self.deployment_healthy.labels(health.alias, health.deployment).set(1 if health.healthy else 0)
                self.deployment_cooldown.labels(health.alias, health.deployment).set(health.cooldown_seconds)

    def render(self) -> tuple[bytes, str]:
        self.publish()
        self.refresh()
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=path)  # type: ignore[no-untyped-call]
        return generate_latest(merged), CONTENT_TYPE_LATEST

    @staticmethod
    def worker_exit() -> None:
        """Drop this worker's live gauges from the shared directory."""
        if multiprocess_dir() is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
