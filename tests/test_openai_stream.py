"""The `openai` adapter end to end: our HTTP API → the real `openai` SDK → real HTTP bytes
from an upstream that speaks OpenAI's wire (`httpx2.MockTransport`, or a loopback server
where sockets matter)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import pytest

from streamgate.providers.openai_stream import OpenAIStreamAdapter
from streamgate.server import create_app
from support import Answer, closed_port, serve, settings
from wire_openai import (
    SSE_HEAD,
    LoopbackUpstream,
    MockUpstream,
    Reply,
    chunk,
    completion,
    http_chunk,
    leave_mid_stream,
    reset,
    split,
    sse_body,
)

KEY = "sk-test-0123456789abcdef"
BASE_URL = "https://openai.upstream.test/v1"
HELLO = {"provider": "openai", "messages": [{"role": "user", "content": "Hello"}]}
TEXT = ["Hello", ", ", "世界", " 🙂🚀", "\nnew line"]
USAGE = {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}


@contextmanager
def gateway(upstream: MockUpstream | None = None, **overrides: Any) -> Iterator[str]:
    """Our app serving the `openai` adapter (over `upstream`'s transport) on 127.0.0.1."""
    config = settings(**{"openai_api_key": KEY, "openai_base_url": BASE_URL, "upstream_max_retries": 2, **overrides})
    adapter = OpenAIStreamAdapter(config, http_client=upstream.client() if upstream else None)
    with serve(create_app(config, adapters={"openai": adapter})) as url:
        yield url


def post(url: str, body: dict[str, Any] = HELLO, path: str = "/api/v1/chat/stream") -> Answer:
    return Answer(httpx2.post(url + path, json=body, timeout=10))


def assert_error_tail(answer: Answer, error_type: str, message_part: str) -> None:
    """The contract's end of a failed stream: a final `error` frame, `event: error`, `[DONE]`."""
    *_, final, error, done = answer.events
    assert json.loads(final.data)["finish_reason"] == "error"
    assert error.event == "error" and int(error.id) == int(final.id) + 1
    body = json.loads(error.data)["error"]
    assert body["type"] == error_type and body["provider"] == "openai"
    assert message_part in body["message"]
    assert done.data == "[DONE]"


# --- the happy path ---------------------------------------------------------------------


@pytest.mark.parametrize("piece_size", [1, 5, 10_000])
def test_text_arrives_exactly_with_one_final_frame_carrying_usage(piece_size: int) -> None:
    """Emoji and CJK split mid-character across reads arrive intact; the role-only delta
    makes no frame; the usage chunk (empty `choices`) lands in the one final frame."""
    upstream = MockUpstream(Reply(200, split(completion(TEXT), piece_size)))
    with gateway(upstream) as url:
        answer = post(url)
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    messages = answer.messages
    assert [m["content"] for m in messages] == [*TEXT, ""]
    assert [int(e.id) for e in answer.events[:-1]] == list(range(1, len(TEXT) + 2))
    assert all(m["finish_reason"] is None and m["usage"] is None for m in messages[:-1])
    assert messages[-1] == {"content": "", "finish_reason": "stop", "model": "gpt-4o", "provider": "openai",
                            "usage": USAGE}
    assert answer.events[-1].data == "[DONE]"


def test_what_is_sent_upstream() -> None:
    upstream = MockUpstream(Reply(200, [completion(["ok"])]))
    body = {"provider": "openai", "model": "gpt-4o-mini", "temperature": 0.2, "max_tokens": 50,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Again"}]}
    with gateway(upstream) as url:
        assert post(url, body).text == "ok"
    (seen,) = upstream.seen
    assert (seen.method, seen.url) == ("POST", BASE_URL + "/chat/completions")
    assert seen.json == {"model": "gpt-4o-mini", "messages": body["messages"], "temperature": 0.2,
                         "max_completion_tokens": 50, "stream": True, "stream_options": {"include_usage": True}}
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert re.fullmatch(r"[0-9a-f]{32}", seen.headers["x-request-id"])
    assert seen.headers["accept"] == "application/json"


@pytest.mark.parametrize(("upstream_reason", "ours"), [
    ("stop", "stop"), ("length", "length"), ("content_filter", "content_filter"),
    ("tool_calls", "tool_calls"), ("function_call", "tool_calls"), ("eos", "stop"),
])
def test_finish_reasons_are_mapped(upstream_reason: str, ours: str) -> None:
    upstream = MockUpstream(Reply(200, [completion(["a"], finish_reason=upstream_reason, usage=None)]))
    with gateway(upstream) as url:
        messages = post(url).messages
    assert messages[-1]["finish_reason"] == ours and messages[-1]["usage"] is None


def test_non_streaming_chat_collects_the_answer() -> None:
    upstream = MockUpstream(Reply(200, split(completion(TEXT, finish_reason="length"), 3)))
    with gateway(upstream) as url:
        answer = post(url, path="/api/v1/chat")
    assert answer.status == 200
    assert answer.json() == {"content": "".join(TEXT), "finish_reason": "length", "model": "gpt-4o",
                             "provider": "openai", "usage": USAGE, "tool_calls": None}


# --- before the 200: errors with real statuses -------------------------------------------


def test_missing_key_is_401_naming_the_variable_without_an_upstream_call() -> None:
    upstream = MockUpstream()
    with gateway(upstream, openai_api_key=None) as url:
        answer = post(url)
        health = httpx2.get(url + "/api/v1/chat/stream/health").json()
    assert answer.status == 401
    error = answer.json()["error"]
    assert error["type"] == "provider_auth_error" and "OPENAI_API_KEY" in error["message"]
    assert upstream.seen == []
    assert health["providers"]["openai"]["configured"] is False


def test_upstream_401_is_provider_auth_error_never_echoing_the_key() -> None:
    upstream = MockUpstream(Reply.error(401, f"Incorrect API key provided: {KEY}."))
    with gateway(upstream) as url:
        answer = post(url)
    assert answer.status == 401
    error = answer.json()["error"]
    assert error["type"] == "provider_auth_error" and "OPENAI_API_KEY" in error["message"]
    assert KEY not in answer.raw.decode()
    assert len(upstream.seen) == 1  # not retried


def test_429_is_retried_then_passed_on_with_retry_after() -> None:
    upstream = MockUpstream(*(Reply.error(429, "Rate limit reached", {"retry-after": "0"}) for _ in range(2)),
                            Reply.error(429, "Rate limit reached for gpt-4o", {"retry-after": "7"}))
    with gateway(upstream) as url:
        answer = post(url)
    assert answer.status == 429
    assert answer.headers["retry-after"] == "7"
    error = answer.json()["error"]
    assert error["type"] == "rate_limited" and "Rate limit reached for gpt-4o" in error["message"]
    assert len(upstream.seen) == 3


def test_500_then_success_is_retried_with_the_same_request_id() -> None:
    upstream = MockUpstream(Reply.error(500, "The server had an error"), Reply(200, [completion(TEXT)]))
    with gateway(upstream) as url:
        answer = post(url)
    assert answer.status == 200 and answer.text == "".join(TEXT)
    first, second = upstream.seen
    assert first.json == second.json and first.headers["x-request-id"] == second.headers["x-request-id"]


def test_persistent_500_is_502() -> None:
    upstream = MockUpstream(*(Reply.error(503, "Service Unavailable") for _ in range(2)))
    with gateway(upstream, upstream_max_retries=1) as url:
        answer = post(url)
    assert answer.status == 502
    error = answer.json()["error"]
    assert error == {"type": "upstream_error", "message": "openai failed with HTTP 503: Service Unavailable",
                     "provider": "openai"}
    assert len(upstream.seen) == 2


def test_upstream_4xx_passes_through() -> None:
    upstream = MockUpstream(Reply.error(404, "The model `gpt-9` does not exist"))
    with gateway(upstream) as url:
        answer = post(url, {**HELLO, "model": "gpt-9"})
    assert answer.status == 404
    assert answer.json()["error"]["type"] == "upstream_error"
    assert "gpt-9" in answer.json()["error"]["message"] and len(upstream.seen) == 1


def test_unreachable_upstream_is_502() -> None:
    with gateway(openai_base_url=f"http://127.0.0.1:{closed_port()}/v1", upstream_max_retries=0) as url:
        answer = post(url)
    assert answer.status == 502
    assert answer.json()["error"] == {"type": "upstream_error", "message": "could not connect to openai",
                                      "provider": "openai"}


# --- after the 200: the error frames -------------------------------------------------------


def test_malformed_frame_mid_stream_ends_with_error_frames() -> None:
    body = sse_body([chunk(role="assistant"), chunk("Hel"), chunk("lo"), b'data: {"choices": [{"delta": \n\n'])
    with gateway(MockUpstream(Reply(200, [body]))) as url:
        answer = post(url)
    assert answer.status == 200
    assert answer.text == "Hello"
    assert_error_tail(answer, "upstream_error", "malformed upstream data")


def test_error_object_mid_stream_ends_with_error_frames() -> None:
    body = sse_body([chunk("Hel"), {"error": {"message": "The server had an error while processing your request.",
                                              "type": "server_error", "param": None, "code": None}}])
    with gateway(MockUpstream(Reply(200, [body]))) as url:
        answer = post(url)
    assert answer.text == "Hel"
    assert_error_tail(answer, "upstream_error", "The server had an error while processing")


def test_stream_ending_without_finish_reason_is_an_error() -> None:
    with gateway(MockUpstream(Reply(200, [sse_body([chunk("Hel")])]))) as url:
        answer = post(url)
    assert answer.text == "Hel"
    assert_error_tail(answer, "upstream_error", "without a finish reason")


def _deltas_then(after: str) -> Any:
    """A loopback behaviour: the SSE head and three deltas, then `after` (reset / stall)."""

    async def behaviour(writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + http_chunk(sse_body([chunk(role="assistant"), chunk("a"), chunk("b"), chunk("c")],
                                                    done=False)))
        await writer.drain()
        await asyncio.sleep(0.05)
        if after == "reset":
            reset(writer)
        elif after == "trickle":
            for _ in range(100):  # a long answer: a delta every 20 ms until the reader leaves
                writer.write(http_chunk(sse_body([chunk("x")], done=False)))
                await writer.drain()
                await asyncio.sleep(0.02)

    return behaviour


def test_connection_reset_mid_stream_ends_with_error_frames() -> None:
    with LoopbackUpstream(_deltas_then("reset")).running() as upstream:
        with gateway(openai_base_url=upstream.url) as url:
            answer = post(url)
    assert answer.status == 200 and answer.text == "abc"
    assert_error_tail(answer, "upstream_error", "connection failed mid-stream")


def test_upstream_that_stalls_mid_stream_times_out() -> None:
    with LoopbackUpstream(_deltas_then("stall")).running() as upstream:
        with gateway(openai_base_url=upstream.url, upstream_timeout_s=0.3) as url:
            started = time.monotonic()
            answer = post(url)
    assert answer.text == "abc"
    assert_error_tail(answer, "upstream_timeout", "timed out")
    assert time.monotonic() - started < 3


def test_upstream_that_never_answers_is_504() -> None:
    async def silent(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    with LoopbackUpstream(silent).running() as upstream:
        with gateway(openai_base_url=upstream.url, upstream_timeout_s=0.2, upstream_max_retries=1) as url:
            answer = post(url)
    assert answer.status == 504
    assert answer.json()["error"]["type"] == "upstream_timeout"
    assert len(upstream.requests) == 2


def test_client_disconnect_closes_the_upstream_connection_within_a_second() -> None:
    with LoopbackUpstream(_deltas_then("trickle")).running() as upstream:
        with gateway(openai_base_url=upstream.url) as url:
            received, left_at = leave_mid_stream(url + "/api/v1/chat/stream", HELLO, until=b'"content":"x"')
            closed_after = upstream.seconds_to_close(left_at)
    assert closed_after is not None and closed_after < 1.0, "the upstream connection was not closed in 1 s"
    assert b'"content":"a"' in received


def test_connection_is_reused_after_done() -> None:
    """After `[DONE]` the adapter reads the body to its end (here the last chunk of the
    chunked body comes 20 ms later), so the next request reuses the connection."""

    async def complete(writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + http_chunk(completion(TEXT)))
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"0\r\n\r\n")

    with LoopbackUpstream(complete).running() as upstream:
        with gateway(openai_base_url=upstream.url) as url:
            answers = [post(url), post(url, path="/api/v1/chat")]
    assert answers[0].text == "".join(TEXT) and answers[0].messages[-1]["usage"] == USAGE
    assert answers[1].json()["content"] == "".join(TEXT)
    assert len(upstream.requests) == 2 and upstream.connections == 1
