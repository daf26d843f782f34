"""Prometheus metrics: what an operator scrapes from `GET /metrics`.

Everything is recorded per request or per stream, never per frame: the pipeline counts
its frames in `pipeline.StreamProgress` and `record_stream` adds them once at the end.
What held the event loop is recorded apart from requests (`Stalls`, at the end): a timer
every 100 ms measures how late it runs, and a `gc.callbacks` entry times each collection.

The metrics live in prometheus-client's default registry: one process serves one app,
the process collectors (CPU, memory, open files, GC) come with it for free, and the
places that record — `pipeline.run_chat` and the adapters' shared retry loop
(`adapter.open_with_retries`) — are module-level functions with no app at hand.
Tests compare two scrapes, so other tests' traffic in the same process does not matter.

With several worker processes (`WORKERS`, see `workers.py`) `PROMETHEUS_MULTIPROC_DIR`
is set before they start: each process writes its values there and a scrape, whichever
worker answers it, adds up every process's (prometheus-client's multiprocess mode; the
process collectors have no meaning summed, so they are left out there).
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import prometheus_client
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import Response

from .chat_types import Usage

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # no `*_created` series: half the scrape, no use here

#: The `provider` label of a request rejected before a provider was picked (bad JSON, …).
NO_PROVIDER = "unknown"

REQUESTS = Counter("streamgate_requests", "Chat requests received (every dialect, streamed or not).", ["provider"])
ERRORS = Counter(
    "streamgate_errors",
    "Chat requests answered with an error: an HTTP error status, or an error frame mid-stream.",
    ["provider", "type"],
)
TIME_TO_FIRST_TOKEN = Histogram(
    "streamgate_time_to_first_token_seconds",
    "From the request reaching the pipeline to the first content frame sent.",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 20.0, 60.0),
)
STREAM_DURATION = Histogram(
    "streamgate_stream_duration_seconds",
    "From the request reaching the pipeline to the end of its upstream stream (opened streams only).",
    ["provider"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0),
)
FRAMES_SENT = Counter(
    "streamgate_frames_sent",
    "Chunk frames relayed to clients: content frames and the final one (not error frames, keep-alives, [DONE]).",
    ["provider"],
)
STREAMS_IN_FLIGHT = Gauge(
    "streamgate_streams_in_flight", "Chat requests being answered right now.", ["provider"], multiprocess_mode="livesum"
)
UPSTREAM_RETRIES = Counter(
    "streamgate_upstream_retries", "Retries of an upstream call before its first token.", ["provider"]
)
TOKENS = Counter(
    "streamgate_tokens",
    "Tokens the upstreams reported, by type: prompt (cached and cache_creation included), completion "
    "(reasoning included), cached (read from the prompt cache), cache_creation (written to it), reasoning.",
    ["provider", "type"],
)
#: The `type` labels of `TOKENS`, in the order `ProviderSeries.tokens` holds them.
TOKEN_TYPES = ("prompt", "completion", "cached", "cache_creation", "reasoning")
GATEWAY_OVERHEAD = Histogram(
    "streamgate_gateway_overhead_seconds",
    "The gateway's own time per answered request up to its response head, upstream waiting excluded "
    "(see README, Observability).",
    ["provider"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)


class StreamStats(Protocol):
    """What `record_stream` reads of one stream (`pipeline.StreamProgress`)."""

    started_at: float
    first_token_at: float | None
    frames_sent: int
    error_type: str | None
    usage: Usage | None

    def gateway_overhead(self) -> float | None: ...


Add = Callable[[float], None]


def adder(child: Counter | Gauge) -> Add:
    """`child.inc` for a labelled child, without prometheus-client's checks per call (is the
    child observable, is the amount not negative: both hold for every call here): its
    value's own `inc`, which holds the lock (or, with `PROMETHEUS_MULTIPROC_DIR`, writes
    the worker's file) as `inc` would. `child.inc` itself if the value is not found."""
    value = getattr(child, "_value", None)
    inc = getattr(value, "inc", None)
    return inc if callable(inc) else child.inc


def observer(child: Histogram) -> Add:
    """`child.observe` for a labelled child, without its checks per call and with the bucket
    found by bisection instead of a loop over the bounds (the same bucket for any number:
    the first whose bound is not below it). `child.observe` if its parts are not found."""
    total: Any = getattr(child, "_sum", None)
    bounds: Any = getattr(child, "_upper_bounds", None)
    buckets: Any = getattr(child, "_buckets", None)
    if not isinstance(bounds, list) or not isinstance(buckets, list) or len(bounds) != len(buckets):
        return child.observe
    if not all(callable(getattr(value, "inc", None)) for value in (total, *buckets)):
        return child.observe
    add_to_total: Add = total.inc
    bucket_adds: list[Add] = [bucket.inc for bucket in buckets]

    def observe(amount: float) -> None:
        add_to_total(amount)
        bucket_adds[bisect.bisect_left(bounds, amount)](1)

    return observe


class ProviderSeries:
    """One provider's labelled series, looked up once (a `labels()` call is not free), and
    how each is added to per request (`adder`, `observer`: every request adds to six of
    them and observes three)."""

    __slots__ = (
        "requests",
        "in_flight",
        "frames_sent",
        "time_to_first_token",
        "stream_duration",
        "tokens",
        "gateway_overhead",
        "add_request",
        "add_in_flight",
        "add_frames_sent",
        "observe_time_to_first_token",
        "observe_stream_duration",
        "add_tokens",
        "observe_gateway_overhead",
    )

    def __init__(self, provider: str) -> None:
        self.requests = REQUESTS.labels(provider)
        self.in_flight = STREAMS_IN_FLIGHT.labels(provider)
        self.frames_sent = FRAMES_SENT.labels(provider)
        self.time_to_first_token = TIME_TO_FIRST_TOKEN.labels(provider)
        self.stream_duration = STREAM_DURATION.labels(provider)
        self.tokens = tuple(TOKENS.labels(provider, kind) for kind in TOKEN_TYPES)
        self.gateway_overhead = GATEWAY_OVERHEAD.labels(provider)
        self.add_request = adder(self.requests)
        self.add_in_flight = adder(self.in_flight)
        self.add_frames_sent = adder(self.frames_sent)
        self.observe_time_to_first_token = observer(self.time_to_first_token)
        self.observe_stream_duration = observer(self.stream_duration)
        self.add_tokens = tuple(adder(child) for child in self.tokens)
        self.observe_gateway_overhead = observer(self.gateway_overhead)


_series_by_provider: dict[str, ProviderSeries] = {}


def series(provider: str) -> ProviderSeries:
    found = _series_by_provider.get(provider)
    if found is None:
        found = _series_by_provider[provider] = ProviderSeries(provider)
    return found


def declare(providers: Iterable[str]) -> None:
    """Show every provider's series from the first scrape, at zero (so that `rate()` sees
    the first request too)."""
    for provider in providers:
        series(provider)
        UPSTREAM_RETRIES.labels(provider)


def stream_started(provider: str) -> None:
    provider_series = series(provider)
    provider_series.add_request(1)
    provider_series.add_in_flight(1)


def record_stream(provider: str, stats: StreamStats, *, upstream_opened: bool) -> None:
    """Record one finished (or abandoned) stream, once, at its end."""
    ended_at = time.monotonic()
    provider_series = series(provider)
    provider_series.add_in_flight(-1)
    if stats.error_type is not None:
        ERRORS.labels(provider, stats.error_type).inc()
    if stats.frames_sent:
        provider_series.add_frames_sent(stats.frames_sent)
    if stats.first_token_at is not None:
        provider_series.observe_time_to_first_token(stats.first_token_at - stats.started_at)
    if upstream_opened:
        provider_series.observe_stream_duration(ended_at - stats.started_at)
    overhead = stats.gateway_overhead()
    if overhead is not None:
        provider_series.observe_gateway_overhead(overhead)
    usage = stats.usage
    if usage is not None:
        prompt, completion, cached, creation, reasoning = provider_series.add_tokens
        prompt(usage.prompt_tokens)
        completion(usage.completion_tokens)
        if usage.cached_tokens:
            cached(usage.cached_tokens)
        if usage.cache_creation_tokens:
            creation(usage.cache_creation_tokens)
        if usage.reasoning_tokens:
            reasoning(usage.reasoning_tokens)


def record_rejected(error_type: str, provider: str | None = None) -> None:
    """A chat request refused before it reached the pipeline (bad JSON, unknown provider, …)."""
    provider = provider or NO_PROVIDER
    REQUESTS.labels(provider).inc()
    ERRORS.labels(provider, error_type).inc()


def record_retry(provider: str | None) -> None:
    UPSTREAM_RETRIES.labels(provider or NO_PROVIDER).inc()


class CallerSeries:
    """One caller's series (`[[callers]]`, names from the config file only). The families
    are made with the first caller: a gateway without callers shows none of them."""

    __slots__ = ("_errors", "in_flight", "name", "requests", "tokens")

    def __init__(self, name: str, families: CallerFamilies) -> None:
        self.name = name
        self.requests = families.requests.labels(name)
        self.in_flight = families.in_flight.labels(name)
        self.tokens = families.tokens.labels(name)
        self._errors = families.errors

    def errors(self, error_type: str) -> Counter:
        return self._errors.labels(self.name, error_type)


class CallerFamilies:
    def __init__(self) -> None:
        self.requests = Counter(
            "streamgate_caller_requests", "Chat requests per caller (refused ones included).", ["caller"]
        )
        self.errors = Counter(
            "streamgate_caller_errors",
            "Chat requests of a caller answered with an error (rate_limited, forbidden_model, …).",
            ["caller", "type"],
        )
        self.tokens = Counter(
            "streamgate_caller_tokens",
            "Tokens charged to a caller (prompt + completion, as the upstream reported them).",
            ["caller"],
        )
        self.in_flight = Gauge(
            "streamgate_caller_streams_in_flight",
            "Streams of a caller running now (resumable ones without a reader included).",
            ["caller"],
            multiprocess_mode="livesum",
        )


_caller_families: CallerFamilies | None = None


def caller_series(name: str) -> CallerSeries:
    global _caller_families
    if _caller_families is None:
        _caller_families = CallerFamilies()
    return CallerSeries(name, _caller_families)


def scraped_registry() -> CollectorRegistry:
    """This process's registry, or with `PROMETHEUS_MULTIPROC_DIR` one that reads every
    worker's values."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


SCRAPED = scraped_registry()


async def scrape(request: Request) -> Response:
    """`GET /metrics`: Prometheus text format 0.0.4, or what the scraper's `Accept` asks
    for (OpenMetrics, text 1.0.0)."""
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(SCRAPED), headers={"content-type": content_type})


# --- routes and keys ------------------------------------------------------------------

ROUTE_ATTEMPTS = Counter(
    "streamgate_route_attempts",
    "Targets asked for requests to a route (retries of one target count once).",
    ["route", "target"],
)
ROUTE_FALLBACKS = Counter(
    "streamgate_route_fallbacks",
    "Targets asked because the one asked before failed before its first token.",
    ["route", "target"],
)
ROUTE_HEDGES_STARTED = Counter(
    "streamgate_route_hedges_started",
    "Targets asked because the one asked before had no token after hedge_after_ms.",
    ["route", "target"],
)
ROUTE_HEDGES_WON = Counter(
    "streamgate_route_hedges_won",
    "Hedge attempts (asked because another was late) whose first token came first.",
    ["route", "target"],
)
ROUTE_SKIPPED = Counter(
    "streamgate_route_skipped",
    "Targets skipped because their breaker is open (5 failures in a row).",
    ["route", "target"],
)
KEY_REQUESTS = Counter(
    "streamgate_upstream_key_requests",
    "Upstream requests per provider key (keys named by position, 1 first).",
    ["provider", "key"],
)
KEY_RESTS = Counter(
    "streamgate_upstream_key_rests",
    "Times a provider key was set to rest (reason: rate_limited or rejected).",
    ["provider", "key", "reason"],
)


class RouteSeries:
    """One route target's labelled series, looked up once (when the route is built)."""

    __slots__ = ("attempts", "fallbacks", "hedges_started", "hedges_won", "skipped")

    def __init__(self, route: str, target: str) -> None:
        self.attempts = ROUTE_ATTEMPTS.labels(route, target)
        self.fallbacks = ROUTE_FALLBACKS.labels(route, target)
        self.hedges_started = ROUTE_HEDGES_STARTED.labels(route, target)
        self.hedges_won = ROUTE_HEDGES_WON.labels(route, target)
        self.skipped = ROUTE_SKIPPED.labels(route, target)


def route_series(route: str, target: str) -> RouteSeries:
    return RouteSeries(route, target)


def moved(old_provider: str, new_provider: str) -> None:
    """A route's request served by another provider than the one it was counted under
    when it began: its in-flight count moves along (the request stays counted under the
    first)."""
    series(old_provider).in_flight.dec()
    series(new_provider).in_flight.inc()


# --- stalls: what held the event loop ------------------------------------------------------

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
GC_PAUSE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
EVENT_LOOP_LAG = Histogram(
    "streamgate_event_loop_lag_seconds",
    "How late the event loop ran a timer due every 100 ms: how long something held the loop "
    "(a long callback, a GC pause, a blocking call) when the timer came due.",
    buckets=LAG_BUCKETS,
)
GC_PAUSE = Histogram(
    "streamgate_gc_pause_seconds",
    "Each garbage collection of the process, start to end, by generation (2: a full collection).",
    ["generation"],
    buckets=GC_PAUSE_BUCKETS,
)
#: Seconds from one run of the stall timer to when the next is due. A stall is seen when it
#: holds the loop as the timer comes due: one of 20 ms, once in five.
LAG_INTERVAL_S = 0.1


class GcPauses:
    """A `gc.callbacks` entry keeping each collection's duration until the stall timer
    moves them into `GC_PAUSE` (`flush`). The callback takes no lock and records nothing
    itself: a collection can start inside prometheus-client's own lock (in multiprocess
    mode one lock for every value), where recording would wait for ever. It is in
    `gc.callbacks` once while any app of the process runs (`start` and `stop` are counted:
    tests run several apps in one process, one after another or at once). Its cost is two
    calls per collection, not per request (measured in the README, "Metrics")."""

    def __init__(self) -> None:
        self._by_generation = tuple(GC_PAUSE.labels(str(generation)) for generation in range(3))
        self._started_at = 0.0
        self._pending: list[list[float]] = [[], [], []]  # seconds, by generation
        self._apps = 0
        self._lock = threading.Lock()

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started_at = time.perf_counter()
        else:
            self._pending[info["generation"]].append(time.perf_counter() - self._started_at)

    def flush(self) -> None:
        with self._lock:  # one flush at a time (apps in threads); the callback never waits for it
            for generation, pauses in enumerate(self._by_generation):
                if self._pending[generation]:
                    durations, self._pending[generation] = self._pending[generation], []
                    for duration in durations:
                        pauses.observe(duration)

    def start(self) -> None:
        with self._lock:
            self._apps += 1
            if self._apps == 1:
                gc.callbacks.append(self)

    def stop(self) -> None:
        with self._lock:
            self._apps -= 1
            if self._apps == 0:
                gc.callbacks.remove(self)
        self.flush()


GC_PAUSES = GcPauses()


class Stalls:
    """What an app records of its process's stalls while it runs: a timer in the loop that
    serves it, due every `LAG_INTERVAL_S` (one pending at a time, set again each time it
    runs; no task), records how late it ran in `EVENT_LOOP_LAG` — a callback, a GC pause or
    a blocking call holding the loop delays it by as long — and moves the GC pauses kept
    since its last run into `GC_PAUSE`. Its cost is one callback per interval, whatever
    the load."""

    __slots__ = ("_due", "_handle", "_loop")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._due = 0.0
        GC_PAUSES.start()
        self._handle = self._arm()

    def _arm(self) -> asyncio.TimerHandle:
        # `perf_counter`, not `loop.time()`: uvloop's clock counts whole milliseconds
        self._due = time.perf_counter() + LAG_INTERVAL_S
        return self._loop.call_later(LAG_INTERVAL_S, self._ran)

    def _ran(self) -> None:
        EVENT_LOOP_LAG.observe(max(0.0, time.perf_counter() - self._due))
        GC_PAUSES.flush()
        self._handle = self._arm()

    def stop(self) -> None:
        self._handle.cancel()
        GC_PAUSES.stop()
