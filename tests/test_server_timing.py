"""`Server-Timing: gateway;dur=<ms>, upstream;dur=<ms>` on every chat answer — streams,
JSON answers, errors, refusals — and `streamgate_gateway_overhead_seconds` in `/metrics`.

The upstream is a real loopback server that waits `DELAY_S` before its response head, so
the upstream part must be at least that, and both parts together at most what the client
measured up to the head.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator

import httpx
import pytest
from streamgate.app import create_app
from support import serve, settings
from test_metrics import delta, key, scrape
from wire_openai import SSE_HEAD, LoopbackUpstream, completion, http_chunk

DELAY_S = 0.15
TIMING = re.compile(r"gateway;dur=(\d+(?:\.\d+)?), upstream;dur=(\d+(?:\.\d+)?)")
HELLO = [{"role": "user", "content": "Hello"}]


class SlowUpstream:
    """OpenAI's wire after `DELAY_S`: a stream, or (once `status` is set) an error."""

    def __init__(self) -> None:
        self.status = 200
        self.loopback = LoopbackUpstream(self._answer)

    async def _answer(self, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(DELAY_S)
        if self.status == 200:
            writer.write(SSE_HEAD + http_chunk(completion(["Hi", " there"])) + b"0\r\n\r\n")
        else:
            body = b'{"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}'
            writer.write(
                b"HTTP/1.1 %d Too Many Requests\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%b" % (self.status, len(body), body)
            )
        await writer.drain()


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[str, SlowUpstream]]:
    upstream = SlowUpstream()
    with upstream.loopback.running():
        config = settings(openai_api_key="sk-timing", openai_base_url=upstream.loopback.url, upstream_max_retries=0)
        with serve(create_app(config)) as url:
            yield url, upstream


def timed_post(url: str, body: dict[str, object]) -> tuple[httpx.Response, float, float, float]:
    """POST `body`; the response, its `Server-Timing` parts (ms) and the ms the client waited for the head."""
    with httpx.Client(timeout=10) as client:
        started = time.perf_counter()
        with client.stream("POST", url, json=body) as response:
            waited_ms = (time.perf_counter() - started) * 1000
            response.read()
    match = TIMING.fullmatch(response.headers["server-timing"])
    assert match is not None, response.headers["server-timing"]
    return response, float(match[1]), float(match[2]), waited_ms


@pytest.mark.parametrize("path", ["/api/v1/chat/stream", "/api/v1/chat"])
def test_native_answers_split_gateway_and_upstream_time(running: tuple[str, SlowUpstream], path: str) -> None:
    url, upstream = running
    upstream.status = 200
    response, gateway_ms, upstream_ms, waited_ms = timed_post(url + path, {"provider": "openai", "messages": HELLO})
    assert response.status_code == 200
    assert upstream_ms >= DELAY_S * 1000
    assert gateway_ms + upstream_ms <= waited_ms
    assert gateway_ms < upstream_ms


@pytest.mark.parametrize("stream", [True, False])
def test_chat_completions_answers_carry_it(running: tuple[str, SlowUpstream], stream: bool) -> None:
    url, upstream = running
    upstream.status = 200
    response, gateway_ms, upstream_ms, waited_ms = timed_post(
        url + "/v1/chat/completions", {"model": "gpt-4o", "messages": HELLO, "stream": stream}
    )
    assert response.status_code == 200
    assert DELAY_S * 1000 <= upstream_ms and gateway_ms + upstream_ms <= waited_ms


def test_a_resumable_stream_carries_it(running: tuple[str, SlowUpstream]) -> None:
    url, upstream = running
    upstream.status = 200
    response, _, upstream_ms, _ = timed_post(
        url + "/api/v1/chat/stream", {"provider": "openai", "messages": HELLO, "resumable": True}
    )
    assert response.headers["x-stream-id"] and upstream_ms >= DELAY_S * 1000


def test_an_upstream_error_carries_it(running: tuple[str, SlowUpstream]) -> None:
    url, upstream = running
    upstream.status = 429
    try:
        response, gateway_ms, upstream_ms, waited_ms = timed_post(
            url + "/v1/chat/completions", {"model": "gpt-4o", "messages": HELLO}
        )
    finally:
        upstream.status = 200
    assert response.status_code == 429
    assert DELAY_S * 1000 <= upstream_ms and gateway_ms + upstream_ms <= waited_ms


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/chat/stream", {"provider": "openai", "messages": []}),  # refused before any upstream call
        ("/v1/chat/completions", {"model": "nope/x", "messages": HELLO}),
        ("/api/v1/chat/stream", {"provider": "echo", "messages": HELLO}),  # no upstream at all
    ],
)
def test_answers_without_an_upstream_have_none(
    running: tuple[str, SlowUpstream], path: str, body: dict[str, object]
) -> None:
    url, _ = running
    _, gateway_ms, upstream_ms, waited_ms = timed_post(url + path, body)
    assert upstream_ms == 0 and gateway_ms <= waited_ms


def test_metrics_count_the_gateway_overhead(running: tuple[str, SlowUpstream]) -> None:
    """One observation per answered request, each far below the upstream's delay."""
    url, upstream = running
    upstream.status = 200
    before = scrape(url)
    for _ in range(3):
        timed_post(url + "/api/v1/chat/stream", {"provider": "openai", "messages": HELLO})
    after = scrape(url)
    changed = delta(before, after)
    assert changed[key("streamgate_gateway_overhead_seconds_count", provider="openai")] == 3
    total = after[key("streamgate_gateway_overhead_seconds_sum", provider="openai")] - before.get(
        key("streamgate_gateway_overhead_seconds_sum", provider="openai"), 0.0
    )
    assert 0 < total < 3 * DELAY_S
