"""Prometheus metrics, one `CollectorRegistry` per app (never the process-global one,
so a test process can build many apps).

With ``--workers N`` each worker is its own process; `prepare_multiprocess` points
prometheus_client's multiprocess mode at a fresh directory *before* the workers start,
and `/metrics` then sums what every live worker wrote there (see docs/observability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as prometheus_values
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

log = logging.getLogger("corral.metrics")

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


@dataclass(frozen=True, slots=True)
class _Spec:
    """One per-call metric family: what both ways of counting it publish alike."""

    name: str
    help: str
    labels: tuple[str, ...]
    bounds: tuple[float, ...] | None = None  # a histogram's bucket bounds; None for a counter


REQUESTS = _Spec("corral_requests", "Model calls by API surface, model and HTTP status.",
                 ("surface", "model", "status"))
LATENCY = _Spec("corral_request_duration_seconds",
                "Time from request arrival to the last byte (streams: to the last chunk).", ("surface", "model"),
                LATENCY_BUCKETS)
OVERHEAD = _Spec("corral_overhead_seconds", "Time spent in Corral before the response started, minus upstream time "
                 "(the x-corral-overhead-ms header).", ("surface",), OVERHEAD_BUCKETS)
TTFT = _Spec("corral_time_to_first_token_seconds", "Streams: time to the first upstream event.", ("surface", "model"),
             LATENCY_BUCKETS)
TOKENS = _Spec("corral_tokens", "Tokens by model and kind (input, output, cached_input, reasoning).",
               ("model", "kind"))
COST = _Spec("corral_cost_usd", "Spend in US dollars by model.", ("model",))
ERRORS = _Spec("corral_errors", "Failed calls by surface, model and error type.", ("surface", "model", "type"))
CALL_SPECS = (REQUESTS, LATENCY, OVERHEAD, TTFT, TOKENS, COST, ERRORS)


class _Total:
    """A counter series' running total and the time it was created (its first
    observation): no lock per increment (the gateway is one event-loop thread)."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()


class _Buckets:
    """A histogram series' bucket counts (non-cumulative) and sum. The sum is accumulated
    in the order of the observations, so it is the same float prometheus_client would have."""

    __slots__ = ("bounds", "counts", "created", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bucket with value <= bound
        self.total += value


class _Family:
    """One per-call family's series, by label values, in the order they were created."""

    __slots__ = ("les", "series", "spec")

    def __init__(self, spec: _Spec) -> None:
        self.spec = spec
        self.les = tuple(floatToGoString(b) for b in spec.bounds) if spec.bounds is not None else ()  # type: ignore[no-untyped-call]
        self.series: dict[tuple[str, ...], _Total | _Buckets] = {}

    def total(self, *values: str) -> _Total:
        found = self.series.get(values)
        if found is None:
            found = self.series[values] = _Total()
        assert isinstance(found, _Total)
        return found

    def buckets(self, *values: str) -> _Buckets:
        found = self.series.get(values)
        if found is None:
            assert self.spec.bounds is not None
            found = self.series[values] = _Buckets(self.spec.bounds)
        assert isinstance(found, _Buckets)
        return found

    def empty(self) -> Metric:
        spec = self.spec
        if spec.bounds is None:
            return CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
        return HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)

    def build(self) -> Metric:
        """The family as prometheus_client renders its own Counter or Histogram: the same
        samples in the same order, ``_created`` included."""
        spec = self.spec
        if spec.bounds is None:
            counter = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
            for values, series in list(self.series.items()):
                assert isinstance(series, _Total)
                counter.add_metric(values, series.value, created=series.created)
            return counter
        histogram = HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)
        for values, series in list(self.series.items()):
            assert isinstance(series, _Buckets)
            cumulative, running = [], 0
            for le, count in zip(self.les, series.counts, strict=True):
                running += count
                cumulative.append((le, float(running)))
            histogram.add_metric(values, cumulative, series.total)
            # HistogramMetricFamily has no `created` argument (CounterMetricFamily has):
            # the sample prometheus_client's own Histogram adds, through the public list.
            histogram.samples.append(Sample(spec.name + "_created", dict(zip(spec.labels, values, strict=True)),
                                            series.created))
        return histogram


class _CallCollector:
    """The per-call families as one collector on the app's registry: counted in plain
    objects on the request path, turned into metric families when the registry is read."""

    def __init__(self) -> None:
        self.families = tuple(_Family(spec) for spec in CALL_SPECS)
        (self.requests, self.latency, self.overhead, self.ttft, self.tokens, self.cost,
         self.errors) = self.families

    def describe(self) -> Iterator[Metric]:
        for family in self.families:
            yield family.empty()

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            yield family.build()


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
    they are counted in plain Python objects, and a collector on the app's registry turns
    them into metric families when the registry is read: prometheus_client's own metrics
    take a lock per increment, seven or eight per call. In multiprocess mode
    (``write_through``) they are prometheus_client Counters and Histograms written at once,
    because a scrape answered by another worker reads this worker's values from the
    shared directory; `start` then also refreshes this worker's gauges there every
    ``refresh_seconds``, so a scrape any worker answers sees every worker's gauges.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, write_through: bool | None = None,
                 refresh_seconds: float = 1.0) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.write_through = multiprocess_dir() is not None if write_through is None else write_through
        self.refresh_seconds = refresh_seconds
        self._children: dict[tuple[Any, ...], Any] = {}  # as many as the metrics' own label sets
        self._shapes: dict[tuple[str, str, int, str | None], _Shape] = {}
        self._overheads: dict[str, _Buckets] = {}
        self._refresher: asyncio.Task[None] | None = None
        r = self.registry
        self._calls: _CallCollector | None = None
        self._through: dict[str, Any] = {}  # spec name -> Counter/Histogram, in multiprocess mode
        if self.write_through:
            for spec in CALL_SPECS:
                self._through[spec.name] = (
                    Counter(spec.name, spec.help, spec.labels, registry=r) if spec.bounds is None
                    else Histogram(spec.name, spec.help, spec.labels, buckets=spec.bounds, registry=r))
        else:
            self._calls = _CallCollector()
            r.register(self._calls)
        self.limit_rejections = Counter("corral_limit_rejections", "Requests refused by a rate limit or budget.",
                                        ["limit", "scope"], registry=r)
        self.deployment_healthy = Gauge("corral_deployment_healthy", "1 if a deployment is in service, 0 while "
                                        "it cools down.", ["alias", "deployment"], registry=r,
                                        multiprocess_mode="livemin")
        self.deployment_cooldown = Gauge("corral_deployment_cooldown_seconds", "Seconds left in a deployment's "
                                         "cooldown.", ["alias", "deployment"], registry=r, multiprocess_mode="livemax")
        self.queue_depth = Gauge("corral_batch_queue_depth", "Records waiting in a batch writer's queue.",
                                 ["writer"], registry=r, multiprocess_mode="livesum")
        self.config_reloads = Counter("corral_config_reloads", "Config reloads (--watch, SIGHUP) by result: ok "
                                      "(applied) or error (refused; the old config is still served).", ["result"],
                                      registry=r)
        self.config_info = Gauge("corral_config_info", "1 for the hash of the config being served.", ["hash"],
                                 registry=r, multiprocess_mode="livemax")
        self._config_hash: str | None = None
        self.deployments: Callable[[], Iterable[DeploymentHealth]] | None = None
        self._queues: dict[str, Callable[[], int | None]] = {}

    def count_reload(self, result: str) -> None:
        self.config_reloads.labels(result).inc()

    def config_loaded(self, config_hash: str) -> None:
        """``corral_config_info{hash}`` is 1 for the config served now. The previous hash
        is removed; with workers, it is 0 in this worker's file (a worker that has not
        reloaded yet still shows it at 1, the max over live workers)."""
        previous, self._config_hash = self._config_hash, config_hash
        if previous is not None and previous != config_hash:
            if self.write_through:
                self.config_info.labels(previous).set(0)
            else:
                self.config_info.remove(previous)
        self.config_info.labels(config_hash).set(1)

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
        calls = self._calls
        if calls is None:
            self._observe_through(surface, model, status, seconds, ttft_seconds, tokens, error_type, cost_usd)
            return
        shape = self._shapes.get((surface, model, status, error_type))
        if shape is None:
            shape = self._shape(calls, surface, model, status, error_type)
        shape.requests.value += 1
        shape.latency.observe(seconds)
        if ttft_seconds is not None:
            if shape.ttft is None:
                shape.ttft = calls.ttft.buckets(surface, model)
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
                        total = totals[i] = calls.tokens.total(model, _TOKEN_KINDS[i])
                    total.value += count
        if cost_usd:
            if shape.cost is None:
                shape.cost = calls.cost.total(model)
            shape.cost.value += cost_usd

    def observe_overhead(self, surface: str, seconds: float) -> None:
        """``corral_overhead_seconds``: Corral's own time before the response started."""
        calls = self._calls
        if calls is None:
            self._child(OVERHEAD, surface).observe(seconds)
            return
        series = self._overheads.get(surface)
        if series is None:
            series = self._overheads[surface] = calls.overhead.buckets(surface)
        series.observe(seconds)

    def _shape(self, calls: _CallCollector, surface: str, model: str, status: int,
               error_type: str | None) -> _Shape:
        errors = calls.errors.total(surface, model, error_type) if error_type is not None else None
        shape = _Shape(surface, model, calls.requests.total(surface, model, str(status)),
                       calls.latency.buckets(surface, model), errors)
        self._shapes[(surface, model, status, error_type)] = shape
        return shape

    def _observe_through(self, surface: str, model: str, status: int, seconds: float, ttft_seconds: float | None,
                         tokens: tuple[int, int, int, int] | None, error_type: str | None,
                         cost_usd: float | None) -> None:
        child = self._child
        child(REQUESTS, surface, model, str(status)).inc()
        child(LATENCY, surface, model).observe(seconds)
        if ttft_seconds is not None:
            child(TTFT, surface, model).observe(ttft_seconds)
        if error_type is not None:
            child(ERRORS, surface, model, error_type).inc()
        if tokens is not None:
            for kind, count in zip(_TOKEN_KINDS, tokens, strict=True):
                if count:
                    child(TOKENS, model, kind).inc(count)
        if cost_usd:
            child(COST, model).inc(cost_usd)

    def _child(self, spec: _Spec, *values: str) -> Any:
        """The prometheus_client child for these label values, looked up once:
        `labels()` takes a lock and builds the label tuple on every call."""
        key = (spec.name, *values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = self._through[spec.name].labels(*values)
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
        self.refresh()
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=path)  # type: ignore[no-untyped-call]
        return generate_latest(merged), CONTENT_TYPE_LATEST

    async def start(self) -> None:
        """In multiprocess mode, refresh this worker's gauges in the shared directory every
        ``refresh_seconds`` (a scrape is answered by one worker, which can refresh only its
        own); nothing to do in one process, where the scrape refreshes them. Called by the
        app's lifespan at startup."""
        if multiprocess_dir() is not None and self._refresher is None:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever(),
                                                                       name="corral-metrics-refresh")

    async def stop(self) -> None:
        """At shutdown: stop refreshing and drop this worker's live gauges."""
        task, self._refresher = self._refresher, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.worker_exit()

    async def _refresh_forever(self) -> None:
        while True:
            try:
                self.refresh()
            except Exception:  # a component's callback failed: keep the others' gauges fresh
                log.exception("refreshing gauges failed")
            await asyncio.sleep(self.refresh_seconds)

    @staticmethod
    def worker_exit() -> None:
        """Drop this worker's live gauges from the shared directory."""
        if multiprocess_dir() is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
