"""`GET /metrics` over real HTTP, parsed with prometheus-client's own parser.

The metrics live in the process-wide registry, so each test compares two scrapes and
asserts exact differences.
"""

from __future__ import annotations

import gc
import threading
import time

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families
from streamgate import metrics
from streamgate.adapter import ChunkStream
from streamgate.app import create_app
from streamgate.chat_types import ChatRequest
from streamgate.providers.echo import EchoAdapter
from support import BrokenAdapter, serve, settings

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name.startswith("streamgate_")
    }


#: The series that change with the clock and the garbage collector, not with requests.
STALLS = ("streamgate_event_loop_lag_seconds", "streamgate_gc_pause_seconds")


def delta(before: Samples, after: Samples) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """What requests changed between two scrapes (bucket lines left out: counts and sums say
    enough; the stall series left out)."""
    return {
        key: after[key] - before.get(key, 0.0)
        for key in after
        if after[key] != before.get(key, 0.0)
        and not key[0].endswith(("_bucket", "_sum"))
        and not key[0].startswith(STALLS)
    }


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def chat(url: str, provider: str, text: str = "one two three", path: str = "/api/v1/chat/stream", **extra: object):
    body = {"provider": provider, "messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(f"{url}{path}", json=body, timeout=10)


def test_a_few_streams_and_failures_show_exact_counts() -> None:
    adapters = {"echo": EchoAdapter(0), "broken": BrokenAdapter("partial ", open_failures=1)}
    with serve(create_app(settings(), adapters)) as url:
        before = scrape(url)
        for _ in range(3):
            assert chat(url, "echo").text.endswith("data: [DONE]\n\n")
        assert chat(url, "echo", path="/api/v1/chat").json()["content"] == "one two three"
        assert chat(url, "nope").json()["error"]["type"] == "unknown_provider"
        assert chat(url, "echo", model="gpt-4o").json()["error"]["type"] == "model_not_supported"
        broken = chat(url, "broken")
        assert broken.status_code == 200 and "event: error" in broken.text
        after = scrape(url)

    assert delta(before, after) == {
        key("streamgate_requests_total", provider="echo"): 5,
        key("streamgate_requests_total", provider="broken"): 1,
        key("streamgate_requests_total", provider="unknown"): 1,
        key("streamgate_errors_total", provider="unknown", type="unknown_provider"): 1,
        key("streamgate_errors_total", provider="echo", type="model_not_supported"): 1,
        key("streamgate_errors_total", provider="broken", type="upstream_error"): 1,
        key("streamgate_frames_sent_total", provider="echo"): 12,  # 3 streams × (3 words + final)
        key("streamgate_frames_sent_total", provider="broken"): 1,
        key("streamgate_time_to_first_token_seconds_count", provider="echo"): 3,
        key("streamgate_time_to_first_token_seconds_count", provider="broken"): 1,
        key("streamgate_stream_duration_seconds_count", provider="echo"): 4,  # the 422 never opened one
        key("streamgate_stream_duration_seconds_count", provider="broken"): 1,
        key("streamgate_upstream_retries_total", provider="broken"): 1,
        key("streamgate_tokens_total", provider="echo", type="prompt"): 12,  # 4 answers × 3 words
        key("streamgate_tokens_total", provider="echo", type="completion"): 12,
        key("streamgate_gateway_overhead_seconds_count", provider="echo"): 5,  # every answered request
        key("streamgate_gateway_overhead_seconds_count", provider="broken"): 1,
    }
    assert after[key("streamgate_streams_in_flight", provider="echo")] == 0
    assert after[key("streamgate_streams_in_flight", provider="broken")] == 0
    ttft_sum = after[key("streamgate_time_to_first_token_seconds_sum", provider="echo")]
    assert ttft_sum > before.get(key("streamgate_time_to_first_token_seconds_sum", provider="echo"), 0.0)


def test_a_client_leaving_mid_stream_leaves_nothing_in_flight() -> None:
    words = " ".join(f"w{i}" for i in range(100))
    with serve(create_app(settings(), {"echo": EchoAdapter(delay_ms=50)})) as url:
        before = scrape(url)
        body = {"provider": "echo", "messages": [{"role": "user", "content": words}]}
        with httpx.stream("POST", f"{url}/api/v1/chat/stream", json=body, timeout=10) as response:
            lines = response.iter_lines()
            assert next(lines) == "id: 1"
            assert scrape(url)[key("streamgate_streams_in_flight", provider="echo")] == 1
        deadline = time.monotonic() + 2
        while scrape(url)[key("streamgate_streams_in_flight", provider="echo")] != 0:
            assert time.monotonic() < deadline, "the stream is still in flight after its client left"
            time.sleep(0.02)
        changed = delta(before, scrape(url))
    assert changed[key("streamgate_requests_total", provider="echo")] == 1
    assert changed[key("streamgate_stream_duration_seconds_count", provider="echo")] == 1
    assert key("streamgate_errors_total", provider="echo", type="upstream_error") not in changed


def test_a_chat_request_refused_for_its_bearer_token_is_counted_as_unauthorized() -> None:
    """Only a chat request's 401 (a POST to a chat endpoint) is counted: a GET, to any
    route or to a chat path, is not a chat request."""
    with serve(create_app(settings(gateway_api_key="sekret", metrics_public=True), {"echo": EchoAdapter(0)})) as url:
        before = scrape(url)
        assert chat(url, "echo").status_code == 401
        assert chat(url, "echo", path="/api/v1/chat").status_code == 401
        completions = httpx.post(
            f"{url}/v1/chat/completions",
            headers={"authorization": "Bearer wrong"},
            json={"model": "echo/echo", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert completions.status_code == 401
        assert completions.json()["error"]["code"] == "unauthorized"
        for path in ("/v1/models", "/v1/models/echo/echo", "/api/v1/chat/stream/health", "/api/v1/chat/stream"):
            assert httpx.get(f"{url}{path}").status_code == 401
        after = scrape(url)

    assert delta(before, after) == {
        key("streamgate_requests_total", provider="unknown"): 3,
        key("streamgate_errors_total", provider="unknown", type="unauthorized"): 3,
    }


def test_the_page_is_open_and_metrics_need_the_key_when_the_api_needs_one() -> None:
    with serve(create_app(settings(gateway_api_key="sekret"), {"echo": EchoAdapter(0)})) as url:
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/metrics", headers={"authorization": "Bearer sekret"}).status_code == 200
        assert httpx.get(f"{url}/").status_code == 200
        assert httpx.get(f"{url}/api/v1/chat/stream/health").status_code == 401


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    with serve(create_app(settings(), {"echo": EchoAdapter(0)})) as url:
        response = httpx.get(f"{url}/metrics", headers={"accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


# --- stalls: event-loop lag and GC pauses ----------------------------------------------------

LAG = "streamgate_event_loop_lag_seconds"
GC_PAUSE = "streamgate_gc_pause_seconds"


class LoopBlockingEcho(EchoAdapter):
    """echo, after holding the event loop `block_s` in a blocking call (as an adapter calling
    a synchronous client would)."""

    def __init__(self, block_s: float) -> None:
        super().__init__(0)
        self.block_s = block_s

    async def stream_chat(self, request: ChatRequest) -> ChunkStream:
        time.sleep(self.block_s)
        return await super().stream_chat(request)


def lag_over(samples: Samples, bound: str) -> float:
    """How many times the lag timer ran later than `bound` (a bucket's `le`)."""
    return samples.get(key(f"{LAG}_count"), 0.0) - samples.get(key(f"{LAG}_bucket", le=bound), 0.0)


def test_a_request_that_blocks_the_event_loop_shows_in_the_lag_histogram() -> None:
    with serve(create_app(settings(), {"echo": LoopBlockingEcho(0.3)})) as url:
        before = scrape(url)
        assert chat(url, "echo").status_code == 200
        deadline = time.monotonic() + 5
        while lag_over(after := scrape(url), "0.1") == lag_over(before, "0.1"):
            assert time.monotonic() < deadline, "no lag timer ran late while the loop was held 0.3 s"
            time.sleep(0.02)
    # the timer came due within 0.1 s of the block's start: it ran 0.2 to 0.3 s late
    assert after[key(f"{LAG}_sum")] - before[key(f"{LAG}_sum")] >= 0.19
    assert lag_over(after, "0.5") == lag_over(before, "0.5")


def test_a_collection_shows_in_the_gc_pauses_of_its_generation() -> None:
    full = key(f"{GC_PAUSE}_count", generation="2")
    with serve(create_app(settings(), {"echo": EchoAdapter(0)})) as url:
        before = scrape(url)
        gc.collect()
        deadline = time.monotonic() + 5  # the stall timer records it on its next run
        while (after := scrape(url))[full] == before[full]:
            assert time.monotonic() < deadline, "the collection was not recorded"
            time.sleep(0.02)
    assert after[key(f"{GC_PAUSE}_sum", generation="2")] > before[key(f"{GC_PAUSE}_sum", generation="2")]


def test_a_collection_inside_a_metrics_lock_does_not_wait_for_it() -> None:
    """prometheus-client holds a value's lock while it changes it (in multiprocess mode one
    lock for every value), and a collection can start there: the GC callback must not
    record into a metric itself, or that thread waits for ever."""
    metrics.GC_PAUSES.start()
    try:
        collected = threading.Event()

        def collect_inside_the_lock() -> None:
            with metrics.GC_PAUSE.labels("2")._sum._lock:  # type: ignore[attr-defined]
                gc.collect()
            collected.set()

        threading.Thread(target=collect_inside_the_lock, daemon=True).start()
        assert collected.wait(5), "the collection waited for the metric's lock"
    finally:
        metrics.GC_PAUSES.stop()


def test_the_gc_callback_is_registered_once_while_any_app_runs() -> None:
    callbacks = list(gc.callbacks)
    with serve(create_app(settings(), {"echo": EchoAdapter(0)})):
        with serve(create_app(settings(), {"echo": EchoAdapter(0)})):
            assert gc.callbacks.count(metrics.GC_PAUSES) == 1
        assert gc.callbacks.count(metrics.GC_PAUSES) == 1
    assert gc.callbacks == callbacks


def test_the_direct_adders_count_as_prometheus_clients_own_methods() -> None:
    """`metrics.adder` and `observer` step past prometheus-client's per-call checks through
    its children's values: each must leave exactly what the public `inc` and `observe`
    leave, for every bucket edge (a bound itself falls in its own bucket)."""
    registry = CollectorRegistry()
    buckets = (0.001, 0.01, 0.1, 1.0)
    ours = Histogram("ours", "", ["provider"], buckets=buckets, registry=registry).labels("p")
    public = Histogram("public", "", ["provider"], buckets=buckets, registry=registry).labels("p")
    observe = metrics.observer(ours)
    assert observe != ours.observe  # the direct path, not the fallback
    for amount in (0.0, 0.0005, 0.001, 0.0011, 0.01, 0.5, 1.0, 1.5, 1e9):
        observe(amount)
        public.observe(amount)
    counted = Counter("counted", "", ["provider"], registry=registry).labels("p")
    gauge = Gauge("gauge", "", ["provider"], registry=registry).labels("p")
    add, add_to_gauge = metrics.adder(counted), metrics.adder(gauge)
    add(1)
    add(41)
    add_to_gauge(3)
    add_to_gauge(-1)
    samples = {
        (sample.name, sample.labels.get("le")): sample.value
        for family in registry.collect()
        for sample in family.samples
    }
    for (name, le), value in samples.items():
        if name.startswith("public"):
            assert samples["ours" + name.removeprefix("public"), le] == value, (name, le)
    assert samples["ours_bucket", "0.001"] == 3  # 0.0, 0.0005 and 0.001 itself
    assert samples["counted_total", None] == 42
    assert samples["gauge", None] == 2
