"""The `gemini` adapter end to end: our HTTP API → the real `google-genai` client → real
HTTP bytes from an upstream speaking Gemini's `streamGenerateContent?alt=sse` wire
(`httpx2.MockTransport`, or a loopback server where sockets matter)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import httpx2
import msgspec
import pytest
import support
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from streamgate.app import create_app
from streamgate.chat_types import chat_request_decoder
from streamgate.errors import ProviderAuthError
from streamgate.pipeline import CollectedAnswer, collect
from streamgate.providers import build_adapters
from streamgate.providers.gemini_stream import (
    FOREIGN_SIGNATURE,
    THINKING_LEVELS,
    GeminiStreamAdapter,
    _ResponseFunctionCall,
    signature_of,
    tool_call_chunk,
)
from streamgate.upstream_http import UpstreamTransport
from support import Answer, closed_port, serve, settings
from wire_gemini import frame, function_call, sdk_request, sdk_stream, sse_body, text, thought, usage_metadata
from wire_openai import SSE_HEAD, LoopbackUpstream, MockUpstream, Reply, http_chunk, leave_mid_stream, reset, split
from wire_upstreams import ProviderUpstream, text_stream

KEY = "AIzaSyTest-0123456789abcdefghijklmnopqr"
BASE_URL = "https://gemini.upstream.test"
PATH = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
HELLO = {"provider": "gemini", "messages": [{"role": "user", "content": "Hello"}]}
TEXT = ["Hello", ", ", "世界", " 🙂🚀", "\nnew line"]
USAGE = {"prompt_tokens": 9, "completion_tokens": 12 + 27, "total_tokens": 48, "reasoning_tokens": 27}


# --- Gemini's wire, as the API sends it ---------------------------------------------------


def answer_of(pieces: list[str], finish_reason: str = "STOP") -> bytes:
    """A streamed answer: a thought summary first, the pieces, the finish reason with usage."""
    return sse_body(
        frame(thought("**Planning** the greeting")),
        *(frame(text(p)) for p in pieces),
        frame(text(""), finish_reason=finish_reason, usage=usage_metadata()),
    )


def google_error(
    status: int, message: str, status_name: str, *details: dict[str, Any], headers: dict[str, str] | None = None
) -> Reply:
    body: dict[str, Any] = {"error": {"code": status, "message": message, "status": status_name}}
    if details:
        body["error"]["details"] = list(details)
    return Reply(
        status,
        [json.dumps(body, indent=2).encode()],
        {"content-type": "application/json; charset=UTF-8", **(headers or {})},
    )


API_KEY_INVALID = google_error(
    400,
    "API key not valid. Please pass a valid API key.",
    "INVALID_ARGUMENT",
    {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    },
    {
        "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
        "locale": "en-US",
        "message": "API key not valid. Please pass a valid API key.",
    },
)


def server_error(status: int = 500) -> Reply:
    return google_error(
        status,
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
        "INTERNAL",
    )


# --- our side ---------------------------------------------------------------------------


def gateway(upstream: MockUpstream | None = None, **overrides: Any) -> AbstractContextManager[str]:
    """Our app serving the `gemini` adapter (over `upstream`'s transport) on 127.0.0.1."""
    http_client = upstream.client() if upstream else None
    return support.gateway(
        lambda config: {"gemini": GeminiStreamAdapter(config, http_client=http_client)},
        **{"gemini_api_key": KEY, "gemini_base_url": BASE_URL, "upstream_max_retries": 2, **overrides},
    )


Shared = tuple[str, MockUpstream]


@pytest.fixture(scope="module")
def shared() -> Iterator[Shared]:
    """One gateway with the default settings for the tests that need no others (starting
    a server per test costs CPU the machine does not have); `script` resets it."""
    upstream = MockUpstream()
    with gateway(upstream) as url:
        yield url, upstream


def script(shared: Shared, *replies: Reply) -> Shared:
    url, upstream = shared
    upstream.replies, upstream.seen = list(replies), []
    return url, upstream


client = httpx2.Client(timeout=10)


def post(url: str, body: dict[str, Any] = HELLO, path: str = "/api/v1/chat/stream") -> Answer:
    return Answer(client.post(url + path, json=body))


def error_tail(answer: Answer) -> tuple[dict[str, Any], dict[str, Any]]:
    """The end of a failed stream — final `message` frame, `event: error`, `[DONE]` — as
    (final chunk, error object); the ids run on without a gap."""
    *_, final, error, done = answer.events
    assert final.event == "message" and error.event == "error" and int(error.id) == int(final.id) + 1
    assert done.data == "[DONE]" and done.event == "message"
    return json.loads(final.data), json.loads(error.data)["error"]


# --- the happy path ---------------------------------------------------------------------


@pytest.mark.parametrize("piece_size", [1, 7, 100_000])
def test_text_arrives_exactly_without_thoughts_with_usage_in_the_final_frame(piece_size: int, shared: Shared) -> None:
    """Emoji and CJK split mid-character (and CRLF split) across reads arrive intact; the
    thought part never enters `content`; thinking tokens count as completion tokens."""
    url, upstream = script(shared, Reply(200, split(answer_of(TEXT), piece_size)))
    answer = post(url)
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    messages = answer.messages
    assert [m["content"] for m in messages] == [*TEXT, ""]
    assert [int(e.id) for e in answer.events[:-1]] == list(range(1, len(TEXT) + 2))
    assert all(m["finish_reason"] is None and m["usage"] is None for m in messages[:-1])
    assert messages[-1] == {
        "content": "",
        "finish_reason": "stop",
        "model": "gemini-2.5-flash",
        "provider": "gemini",
        "usage": USAGE,
    }
    assert answer.events[-1].data == "[DONE]"


def test_every_non_thought_part_of_a_frame_is_text_and_the_final_frame_may_carry_text(shared: Shared) -> None:
    body = sse_body(
        frame(thought("Let me think."), text("Bonjour"), text(" à tous")),
        frame(text(" !"), finish_reason="STOP", usage=usage_metadata(5, 4, None)),
    )
    url, _ = script(shared, Reply(200, [body]))
    messages = post(url).messages
    assert [m["content"] for m in messages] == ["Bonjour", " à tous", " !", ""]
    assert messages[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


@pytest.mark.parametrize(("thinking_enabled", "budget"), [(True, 1024), (False, 0)])
def test_what_is_sent_upstream(thinking_enabled: bool, budget: int, shared: Shared) -> None:
    url, upstream = script(shared, Reply(200, [answer_of(["ok"])]))
    body = {
        "provider": "gemini",
        "temperature": 0.2,
        "max_tokens": 50,
        "thinking_enabled": thinking_enabled,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "system", "content": "Use French."},
            {"role": "user", "content": "Again"},
        ],
    }
    assert post(url, body).text == "ok"
    (seen,) = upstream.seen
    assert (seen.method, seen.url) == ("POST", BASE_URL + PATH)
    assert seen.headers["x-goog-api-key"] == KEY
    assert seen.headers["content-type"] == "application/json"
    assert "x-server-timeout" not in seen.headers
    assert seen.json == {
        "contents": [
            {"parts": [{"text": "Hi"}], "role": "user"},
            {"parts": [{"text": "Hello!"}], "role": "model"},
            {"parts": [{"text": "Again"}], "role": "user"},
        ],
        "generationConfig": {"temperature": 0.2, "maxOutputTokens": 50, "thinkingConfig": {"thinkingBudget": budget}},
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Use French."}]},
    }


def test_a_requested_model_is_in_the_url_and_the_frames(shared: Shared) -> None:
    url, upstream = script(shared, Reply(200, [answer_of(["ok"])]))
    messages = post(url, {**HELLO, "model": "gemini-2.5-pro"}).messages
    assert upstream.seen[0].url == BASE_URL + "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    assert {m["model"] for m in messages} == {"gemini-2.5-pro"}


@pytest.mark.parametrize(("upstream_reason", "ours"), [("STOP", "stop"), ("MAX_TOKENS", "length")])
def test_finish_reasons_are_mapped(upstream_reason: str, ours: str, shared: Shared) -> None:
    url, upstream = script(shared, Reply(200, [answer_of(["a"], finish_reason=upstream_reason)]))
    answer = post(url)
    assert answer.messages[-1]["finish_reason"] == ours
    assert [e.event for e in answer.events] == ["message"] * 3


def test_non_streaming_chat_collects_the_answer(shared: Shared) -> None:
    url, upstream = script(shared, Reply(200, split(answer_of(TEXT, finish_reason="MAX_TOKENS"), 3)))
    answer = post(url, path="/api/v1/chat")
    assert answer.status == 200
    assert answer.json() == {
        "content": "".join(TEXT),
        "finish_reason": "length",
        "model": "gemini-2.5-flash",
        "provider": "gemini",
        "usage": USAGE,
        "tool_calls": None,
    }


def test_registered_as_gemini_and_configured_only_with_a_key(shared: Shared) -> None:
    assert isinstance(build_adapters(settings(gemini_api_key=KEY))["gemini"], GeminiStreamAdapter)
    url, _ = script(shared)
    health = httpx2.get(url + "/api/v1/chat/stream/health").json()["providers"]["gemini"]
    assert health == {
        "configured": True,
        "default_model": "gemini-2.5-flash",
        "models": [
            "gemini-2.5-flash",
            "gemini-2.5-pro",
            "gemini-2.5-flash-lite",
            "gemini-3.8-flash",
            "gemini-3.5-flash-lite",
            "gemini-3.1-pro-preview",
        ],
    }


# --- safety blocks --------------------------------------------------------------------------


SAFETY_RATINGS = [
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": True},
    {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
]


@pytest.mark.parametrize("reason", ["SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"])
def test_a_safety_stop_is_content_filter_then_an_error_event(reason: str, shared: Shared) -> None:
    body = sse_body(
        frame(text("Sure, here")),
        {
            "candidates": [{"finishReason": reason, "index": 0, "safetyRatings": SAFETY_RATINGS}],
            "usageMetadata": usage_metadata(9, 3, 0),
            "modelVersion": "gemini-2.5-flash",
        },
    )
    url, _ = script(shared, Reply(200, [body]))
    answer = post(url)
    assert answer.status == 200 and answer.text == "Sure, here"
    final, error = error_tail(answer)
    assert final == {
        "content": "",
        "finish_reason": "content_filter",
        "model": "gemini-2.5-flash",
        "provider": "gemini",
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    }
    assert error == {"type": "content_filter", "message": f"gemini stopped the answer ({reason})", "provider": "gemini"}
    assert sum(1 for m in answer.messages if m["finish_reason"] is not None) == 1


def test_a_safety_stop_without_streaming_is_a_200_with_content_filter(shared: Shared) -> None:
    body = sse_body(
        frame(text("Sure, here")),
        {
            "candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": SAFETY_RATINGS}],
            "usageMetadata": usage_metadata(9, 3, 0),
            "modelVersion": "gemini-2.5-flash",
        },
    )
    url, _ = script(shared, Reply(200, [body]))
    answer = post(url, path="/api/v1/chat")
    assert answer.status == 200
    assert answer.json() == {
        "content": "Sure, here",
        "finish_reason": "content_filter",
        "model": "gemini-2.5-flash",
        "provider": "gemini",
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
        "tool_calls": None,
    }


def test_a_blocked_prompt_without_candidates_is_content_filter(shared: Shared) -> None:
    body = sse_body(
        {
            "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
            "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
            "modelVersion": "gemini-2.5-flash",
            "responseId": "x1",
        }
    )
    url, _ = script(shared, Reply(200, [body]))
    answer = post(url)
    assert answer.status == 200
    final, error = error_tail(answer)
    assert (final["finish_reason"], final["content"]) == ("content_filter", "")
    assert final["usage"] == {"prompt_tokens": 8, "completion_tokens": 0, "total_tokens": 8}
    assert error["type"] == "content_filter" and "PROHIBITED_CONTENT" in error["message"]


def test_another_finish_reason_ends_with_error_frames_keeping_usage(shared: Shared) -> None:
    url, _ = script(shared, Reply(200, [answer_of(["par"], finish_reason="OTHER")]))
    answer = post(url)
    assert answer.text == "par"
    final, error = error_tail(answer)
    assert final["finish_reason"] == "error" and final["usage"] == USAGE
    assert error == {
        "type": "upstream_error",
        "message": "gemini stopped the answer with finish reason OTHER",
        "provider": "gemini",
    }
    whole = post(url, path="/api/v1/chat")
    assert (whole.status, whole.json()["error"]["type"]) == (502, "upstream_error")


# --- before the 200: errors with real statuses -------------------------------------------


def test_missing_key_is_401_naming_the_variable_without_an_upstream_call() -> None:
    upstream = MockUpstream()
    with gateway(upstream, gemini_api_key=None) as url:
        answer = post(url)
        health = httpx2.get(url + "/api/v1/chat/stream/health").json()
    assert answer.status == 401
    assert answer.json()["error"] == {
        "type": "provider_auth_error",
        "provider": "gemini",
        "message": "gemini is not configured; set GEMINI_API_KEY",
    }
    assert upstream.seen == []
    assert health["providers"]["gemini"]["configured"] is False


@pytest.mark.parametrize(
    "reply",
    [
        API_KEY_INVALID,
        google_error(403, "Method doesn't allow unregistered callers.", "PERMISSION_DENIED"),
        google_error(401, "Request had invalid authentication credentials.", "UNAUTHENTICATED"),
    ],
    ids=["400-API_KEY_INVALID", "403", "401"],
)
def test_a_rejected_key_is_401_provider_auth_error_not_retried(reply: Reply, shared: Shared) -> None:
    url, upstream = script(shared, reply)
    answer = post(url)
    assert answer.status == 401
    assert answer.json()["error"] == {
        "type": "provider_auth_error",
        "provider": "gemini",
        "message": "gemini rejected the API key; check GEMINI_API_KEY",
    }
    assert KEY not in answer.raw.decode()
    assert len(upstream.seen) == 1


def test_another_400_passes_through(shared: Shared) -> None:
    url, upstream = script(
        shared,
        google_error(
            400, "* GenerateContentRequest.generation_config.max_output_tokens: must be positive", "INVALID_ARGUMENT"
        ),
    )
    answer = post(url)
    assert answer.status == 400
    assert answer.json()["error"]["type"] == "upstream_error"
    assert "max_output_tokens" in answer.json()["error"]["message"] and len(upstream.seen) == 1


def test_unknown_model_404_passes_through(shared: Shared) -> None:
    url, upstream = script(
        shared,
        google_error(
            404,
            "models/gemini-9 is not found for API version v1beta, or is not supported for generateContent.",
            "NOT_FOUND",
        ),
    )
    answer = post(url, {**HELLO, "model": "gemini-9"})
    assert answer.status == 404
    assert answer.json()["error"]["type"] == "upstream_error" and "gemini-9" in answer.json()["error"]["message"]


def test_a_model_name_that_is_not_one_is_422_without_an_upstream_call(shared: Shared) -> None:
    url, upstream = script(shared)
    answer = post(url, {**HELLO, "model": "../../files"})
    assert answer.status == 422
    assert answer.json()["error"]["type"] == "invalid_request" and "$.model" in answer.json()["error"]["message"]
    assert upstream.seen == []


QUOTA = "You exceeded your current quota, please check your plan and billing details."


def test_429_is_retried_then_passed_on_with_retry_after(shared: Shared) -> None:
    url, upstream = script(
        shared,
        *(google_error(429, QUOTA, "RESOURCE_EXHAUSTED", headers={"retry-after": "0"}) for _ in range(2)),
        google_error(429, QUOTA, "RESOURCE_EXHAUSTED", headers={"retry-after": "7"}),
    )
    answer = post(url)
    assert answer.status == 429
    assert answer.headers["retry-after"] == "7"
    assert answer.json()["error"] == {
        "type": "rate_limited",
        "message": f"gemini rate limit: {QUOTA}",
        "provider": "gemini",
    }
    assert len(upstream.seen) == 3


def test_429_retry_info_in_the_body_becomes_retry_after() -> None:
    retry_info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "6.2s"}
    upstream = MockUpstream(google_error(429, QUOTA, "RESOURCE_EXHAUSTED", retry_info))
    with gateway(upstream, upstream_max_retries=0) as url:
        answer = post(url)
    assert answer.status == 429 and answer.headers["retry-after"] == "7"


def test_500_then_success_is_retried_with_the_same_request(shared: Shared) -> None:
    url, upstream = script(shared, server_error(500), Reply(200, [answer_of(TEXT)]))
    answer = post(url)
    assert answer.status == 200 and answer.text == "".join(TEXT)
    first, second = upstream.seen
    assert (first.url, first.json) == (second.url, second.json)


def test_persistent_5xx_is_502() -> None:
    upstream = MockUpstream(
        server_error(500), google_error(503, "The model is overloaded. Please try again later.", "UNAVAILABLE")
    )
    with gateway(upstream, upstream_max_retries=1) as url:
        answer = post(url)
    assert answer.status == 502
    assert answer.json()["error"] == {
        "type": "upstream_error",
        "provider": "gemini",
        "message": "gemini failed with HTTP 503: The model is overloaded. Please try again later.",
    }
    assert len(upstream.seen) == 2


def test_unreachable_upstream_is_502() -> None:
    with gateway(gemini_base_url=f"http://127.0.0.1:{closed_port()}", upstream_max_retries=0) as url:
        answer = post(url)
    assert answer.status == 502
    assert answer.json()["error"] == {
        "type": "upstream_error",
        "message": "could not connect to gemini",
        "provider": "gemini",
    }


# --- after the 200: the error frames -------------------------------------------------------


def test_malformed_frame_mid_stream_ends_with_error_frames(shared: Shared) -> None:
    body = sse_body(frame(text("Hel")), frame(text("lo")), b'data: {"candidates": [{"content": \r\n\r\n')
    url, _ = script(shared, Reply(200, [body]))
    answer = post(url)
    assert answer.status == 200 and answer.text == "Hello"
    final, error = error_tail(answer)
    assert final["finish_reason"] == "error" and final["usage"] is None
    assert error["type"] == "upstream_error" and error["message"].startswith("gemini sent malformed data")


def test_error_object_mid_stream_ends_with_error_frames(shared: Shared) -> None:
    body = sse_body(
        frame(text("Hel")), {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    )
    url, _ = script(shared, Reply(200, [body]))
    answer = post(url)
    assert answer.text == "Hel"
    _, error = error_tail(answer)
    assert error == {
        "type": "upstream_error",
        "message": "gemini failed with HTTP 503: The model is overloaded.",
        "provider": "gemini",
    }


def test_stream_ending_without_finish_reason_is_an_error(shared: Shared) -> None:
    url, _ = script(shared, Reply(200, [sse_body(frame(text("Hel")))]))
    answer = post(url)
    assert answer.text == "Hel"
    _, error = error_tail(answer)
    assert error["type"] == "upstream_error" and "without a finish reason" in error["message"]


def _frames_then(after: str) -> Any:
    """A loopback behaviour: the SSE head and three text frames, then `after`."""

    async def behaviour(writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + http_chunk(sse_body(frame(text("a")), frame(text("b")), frame(text("c")))))
        await writer.drain()
        await asyncio.sleep(0.05)
        if after == "reset":
            reset(writer)
        elif after == "trickle":
            for _ in range(100):  # a long answer: a frame every 20 ms until the reader leaves
                writer.write(http_chunk(sse_body(frame(text("x")))))
                await writer.drain()
                await asyncio.sleep(0.02)

    return behaviour


def host_root(upstream: LoopbackUpstream) -> str:
    return upstream.url.removesuffix("/v1")  # Gemini's base URL is the host root


def test_connection_reset_mid_stream_ends_with_error_frames() -> None:
    with LoopbackUpstream(_frames_then("reset")).running() as upstream:
        with gateway(gemini_base_url=host_root(upstream)) as url:
            answer = post(url)
    assert answer.status == 200 and answer.text == "abc"
    _, error = error_tail(answer)
    assert error["type"] == "upstream_error" and "connection failed mid-stream" in error["message"]
    assert upstream.requests[0].startswith(b"POST " + PATH.encode() + b" HTTP/1.1\r\n")


def test_upstream_that_stalls_mid_stream_times_out() -> None:
    with LoopbackUpstream(_frames_then("stall")).running() as upstream:
        with gateway(gemini_base_url=host_root(upstream), upstream_timeout_s=0.3) as url:
            started = time.monotonic()
            answer = post(url)
    assert answer.text == "abc"
    _, error = error_tail(answer)
    assert error["type"] == "upstream_timeout"
    assert time.monotonic() - started < 3


def test_upstream_that_never_answers_is_504_after_retries() -> None:
    async def silent(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    with LoopbackUpstream(silent).running() as upstream:
        with gateway(gemini_base_url=host_root(upstream), upstream_timeout_s=0.2, upstream_max_retries=1) as url:
            answer = post(url)
    assert answer.status == 504
    assert answer.json()["error"] == {
        "type": "upstream_timeout",
        "message": "gemini did not answer in time",
        "provider": "gemini",
    }
    assert len(upstream.requests) == 2


def test_client_disconnect_closes_the_upstream_connection_within_a_second() -> None:
    with LoopbackUpstream(_frames_then("trickle")).running() as upstream:
        with gateway(gemini_base_url=host_root(upstream)) as url:
            received, left_at = leave_mid_stream(url + "/api/v1/chat/stream", HELLO, until=b'"content":"x"')
            closed_after = upstream.seconds_to_close(left_at)
    assert closed_after is not None and closed_after < 1.0, "the upstream connection was not closed in 1 s"
    assert b'"content":"a"' in received


# --- the official SDK reads the same bytes ---------------------------------------------------


# A real signature is opaque standard base64 of a few hundred bytes; this one has `+`, `/`
# and padding, which the URL-safe form in a call id must turn back exactly.
SIGNATURE = base64.b64encode(bytes(range(250, 256)) + b"\x00\x10\x83\xff sig" * 40 + b"\xfe").decode()
ARGS = {"city": "Zürich", "note": 'a "quoted" \\ back\\slash 🙂', "days": 3, "metric": True}
CALLS_BODY = sse_body(
    frame(thought("I need the weather for both cities.")),
    frame(text("Let me check.")),
    frame(function_call("get_weather", ARGS, SIGNATURE), function_call("get_time", None)),
    frame(function_call("get_weather", {}), finish_reason="STOP", usage=usage_metadata(40, 25, 61)),
)
CALL_ID = re.compile(r"call_[0-9a-f]{24}")


def test_the_sdk_reads_the_scripted_streams_as_we_do() -> None:
    """Thought parts, text, whole function calls with their signature, usage: the bytes the
    tests script are what the official SDK parses."""
    first, second, third, last = sdk_stream(CALLS_BODY)
    assert first.candidates[0].content.parts[0].thought is True
    assert second.text == "Let me check."
    weather, clock = third.candidates[0].content.parts
    assert (weather.function_call.name, weather.function_call.args) == ("get_weather", ARGS)
    assert weather.thought_signature == base64.b64decode(SIGNATURE)
    assert (clock.function_call.name, clock.function_call.args, clock.thought_signature) == ("get_time", None, None)
    assert last.candidates[0].finish_reason == genai_types.FinishReason.STOP
    assert last.function_calls[0].args == {}
    assert (last.usage_metadata.candidates_token_count, last.usage_metadata.thoughts_token_count) == (25, 61)
    texts = [r.text for r in sdk_stream(answer_of(TEXT))]
    assert texts[1:-1] == TEXT and texts[-1] in ("", None)


# --- thinking: budget (2.5), level (3+), nothing (models that cannot think) ----------------


@pytest.mark.parametrize(
    ("model", "fields", "thinking"),
    [
        ("gemini-2.5-flash", {"thinking_enabled": True}, {"thinkingBudget": 1024}),
        ("gemini-2.5-flash", {}, {"thinkingBudget": 0}),
        ("gemini-2.5-flash", {"reasoning_effort": "none", "thinking_enabled": True}, {"thinkingBudget": 0}),
        ("gemini-2.5-flash", {"reasoning_effort": "minimal"}, {"thinkingBudget": 512}),
        ("gemini-2.5-flash", {"reasoning_effort": "low"}, {"thinkingBudget": 1024}),
        ("gemini-2.5-flash", {"reasoning_effort": "medium"}, {"thinkingBudget": 8192}),
        ("gemini-2.5-flash-lite", {"reasoning_effort": "high"}, {"thinkingBudget": 24576}),
        (
            "gemini-2.5-flash",
            {"thinking_enabled": True, "include_reasoning": True},
            {"thinkingBudget": 1024, "includeThoughts": True},
        ),
        ("gemini-2.5-pro", {}, {"thinkingBudget": 128}),
        (
            "gemini-2.5-pro",
            {"reasoning_effort": "none", "include_reasoning": True},
            {"thinkingBudget": 128, "includeThoughts": True},
        ),
        ("gemini-2.5-pro", {"reasoning_effort": "high"}, {"thinkingBudget": 24576}),
        ("gemini-3.8-flash", {}, {"thinkingLevel": "LOW"}),
        ("gemini-3.8-flash", {"thinking_enabled": True}, {"thinkingLevel": "HIGH"}),
        ("gemini-3.8-flash", {"reasoning_effort": "none"}, {"thinkingLevel": "MINIMAL"}),
        ("gemini-3.8-flash", {"reasoning_effort": "minimal"}, {"thinkingLevel": "MINIMAL"}),
        (
            "gemini-3.8-flash",
            {"reasoning_effort": "low", "include_reasoning": True},
            {"thinkingLevel": "LOW", "includeThoughts": True},
        ),
        ("gemini-3.5-flash-lite", {"reasoning_effort": "medium"}, {"thinkingLevel": "MEDIUM"}),
        ("gemini-3.1-pro-preview", {"reasoning_effort": "high"}, {"thinkingLevel": "HIGH"}),
        ("gemini-4-argon", {"reasoning_effort": "low"}, {"thinkingLevel": "LOW"}),
        ("gemini-flash-latest", {"thinking_enabled": True}, {"thinkingLevel": "HIGH"}),
        ("gemini-2.0-flash", {"reasoning_effort": "high", "include_reasoning": True, "thinking_enabled": True}, None),
        ("gemma-4-31b-it", {"thinking_enabled": True}, None),
    ],
)
def test_the_thinking_config_sent_per_model_and_request(
    model: str, fields: dict[str, Any], thinking: dict[str, Any] | None, shared: Shared
) -> None:
    url, upstream = script(shared, Reply(200, [answer_of(["ok"])]))
    assert post(url, {**HELLO, "model": model, **fields}).status == 200
    sent = upstream.seen[0].json
    assert sent["generationConfig"] == ({"thinkingConfig": thinking} if thinking else {})
    if thinking:
        config = sdk_request(sent)["generationConfig"].thinking_config
        assert config.thinking_budget == thinking.get("thinkingBudget")
        assert config.thinking_level == thinking.get("thinkingLevel")
        assert config.include_thoughts == thinking.get("includeThoughts")


def test_every_thinking_level_sent_is_one_the_sdk_lists() -> None:
    assert set(THINKING_LEVELS.values()) | {"LOW", "HIGH"} <= {level.value for level in genai_types.ThinkingLevel}


def test_gemini_3_streams_reasoning_frames_and_reasoning_tokens(shared: Shared) -> None:
    body = sse_body(
        frame(thought("**Greeting** the user, ")),
        frame(thought("briefly.")),
        frame(text("Hi"), text(" there")),
        frame(text("!"), finish_reason="STOP", usage=usage_metadata(7, 3, 52)),
    )
    url, upstream = script(shared, Reply(200, split(body, 5)))
    answer = post(url, {**HELLO, "model": "gemini-3.8-flash", "reasoning_effort": "low", "include_reasoning": True})
    assert upstream.seen[0].json["generationConfig"] == {
        "thinkingConfig": {"thinkingLevel": "LOW", "includeThoughts": True}
    }
    events = [(e.event, json.loads(e.data)) for e in answer.events[:-1]]
    assert [int(e.id) for e in answer.events[:-1]] == list(range(1, 7))
    assert events[:2] == [
        ("reasoning", {"reasoning": "**Greeting** the user, ", "model": "gemini-3.8-flash", "provider": "gemini"}),
        ("reasoning", {"reasoning": "briefly.", "model": "gemini-3.8-flash", "provider": "gemini"}),
    ]
    assert answer.text == "Hi there!"
    assert answer.messages[-1]["finish_reason"] == "stop"
    assert answer.messages[-1]["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 55,
        "total_tokens": 62,
        "reasoning_tokens": 52,
    }
    whole = collected(body, {**HELLO, "model": "gemini-3.8-flash", "include_reasoning": True})
    assert (whole.reasoning, whole.content) == ("**Greeting** the user, briefly.", "Hi there!")


def collected(body: bytes, request: dict[str, Any]) -> CollectedAnswer:
    """The adapter's stream of `body` joined by the pipeline's collector (what `/api/v1/chat`
    answers)."""

    async def run() -> CollectedAnswer:
        adapter = GeminiStreamAdapter(
            settings(gemini_api_key=KEY, gemini_base_url=BASE_URL),
            http_client=MockUpstream(Reply(200, split(body, 3))).client(),
        )
        stream = await adapter.stream_chat(chat_request_decoder.decode(json.dumps(request)))
        try:
            return await collect(stream)
        finally:
            await stream.aclose()
            await adapter.aclose()

    return asyncio.run(run())


def test_thought_parts_are_dropped_without_include_reasoning(shared: Shared) -> None:
    url, _ = script(shared, Reply(200, [answer_of(["ok"])]))
    answer = post(url, {**HELLO, "reasoning_effort": "high"})
    assert [e.event for e in answer.events] == ["message"] * 3 and answer.text == "ok"


# --- tools -----------------------------------------------------------------------------------

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name"},
        "units": {"anyOf": [{"$ref": "#/$defs/units"}, {"type": "null"}]},
    },
    "required": ["city"],
    "additionalProperties": False,
    "$defs": {"units": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather now.",
            "parameters": WEATHER_SCHEMA,
            "strict": True,
        },
    },
    {"type": "function", "function": {"name": "get_time"}},
]
DECLARATIONS = [
    {
        "functionDeclarations": [
            {"name": "get_weather", "description": "The weather now.", "parametersJsonSchema": WEATHER_SCHEMA},
            {"name": "get_time"},
        ]
    }
]


@pytest.mark.parametrize(
    ("tool_choice", "tool_config"),
    [
        (None, None),
        ("auto", {"functionCallingConfig": {"mode": "AUTO"}}),
        ("required", {"functionCallingConfig": {"mode": "ANY"}}),
        ("none", {"functionCallingConfig": {"mode": "NONE"}}),
        (
            {"type": "function", "function": {"name": "get_time"}},
            {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}},
        ),
    ],
)
def test_tools_and_tool_choice_are_sent_as_function_declarations(
    tool_choice: Any, tool_config: Any, shared: Shared
) -> None:
    """The JSON Schema goes whole as `parametersJsonSchema` ($ref, anyOf, additionalProperties
    and all); `strict` has no Gemini counterpart and is not sent."""
    url, upstream = script(shared, Reply(200, [answer_of(["ok"])]))
    body = {**HELLO, "tools": TOOLS, **({"tool_choice": tool_choice} if tool_choice is not None else {})}
    assert post(url, body).status == 200
    sent = upstream.seen[0].json
    assert sent["tools"] == DECLARATIONS
    assert sent.get("toolConfig") == tool_config
    read = sdk_request(sent)
    assert read["tools"][0].function_declarations[0].parameters_json_schema == WEATHER_SCHEMA
    if tool_config is not None:
        assert read["toolConfig"].function_calling_config.mode.value == tool_config["functionCallingConfig"]["mode"]


@pytest.mark.parametrize("piece_size", [1, 6, 100_000])
def test_calls_stream_whole_with_ids_after_text_and_end_with_tool_calls(piece_size: int, shared: Shared) -> None:
    """Parallel calls, after text, split anywhere across reads (mid-UTF-8, mid-escape): one
    frame per call, indexes in order, compact JSON arguments (`{}` for none)."""
    url, _ = script(shared, Reply(200, split(CALLS_BODY, piece_size)))
    answer = post(url, {**HELLO, "tools": TOOLS, "include_reasoning": True})
    events = [(e.event, json.loads(e.data)) for e in answer.events[:-1]]
    assert [kind for kind, _ in events] == ["reasoning", "message", "tool_call", "tool_call", "tool_call", "message"]
    assert events[1][1]["content"] == "Let me check."
    calls = [data for kind, data in events if kind == "tool_call"]
    assert [(c["index"], c["name"], c["arguments"]) for c in calls] == [
        (0, "get_weather", json.dumps(ARGS, ensure_ascii=False, separators=(",", ":"))),
        (1, "get_time", "{}"),
        (2, "get_weather", "{}"),
    ]
    signed, *unsigned = (c["id"] for c in calls)
    assert re.fullmatch(CALL_ID.pattern + r"\.[A-Za-z0-9_-]+", signed)
    assert all(CALL_ID.fullmatch(i) for i in unsigned) and len({signed, *unsigned}) == 3
    assert events[-1][1] == {
        "content": "",
        "finish_reason": "tool_calls",
        "model": "gemini-2.5-flash",
        "provider": "gemini",
        "usage": {"prompt_tokens": 40, "completion_tokens": 86, "total_tokens": 126, "reasoning_tokens": 61},
    }


def test_calls_without_streaming_are_the_answers_tool_calls(shared: Shared) -> None:
    url, _ = script(shared, Reply(200, split(CALLS_BODY, 9)))
    answer = post(url, {**HELLO, "tools": TOOLS}, path="/api/v1/chat").json()
    assert (answer["content"], answer["finish_reason"]) == ("Let me check.", "tool_calls")
    assert [
        (c["type"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in answer["tool_calls"]
    ] == [("function", "get_weather", ARGS), ("function", "get_time", {}), ("function", "get_weather", {})]


def streamed_call_ids(shared: Shared) -> list[str]:
    url, _ = script(shared, Reply(200, [CALLS_BODY]))
    return [json.loads(e.data)["id"] for e in post(url, {**HELLO, "tools": TOOLS}).events if e.event == "tool_call"]


def second_turn(ids: list[str], model: str = "gemini-2.5-flash") -> dict[str, Any]:
    """The next request: the assistant's calls (ids as the gateway made them) and their results."""
    return {
        "provider": "gemini",
        "model": model,
        "tools": TOOLS,
        "messages": [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "Weather and time in Zürich?"},
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "id": ids[0],
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": json.dumps(ARGS)},
                    },
                    {"id": ids[1], "type": "function", "function": {"name": "get_time", "arguments": ""}},
                ],
            },
            {"role": "tool", "tool_call_id": ids[1], "content": "14:05"},
            {"role": "tool", "tool_call_id": ids[0], "content": '{"temp_c": 21.5, "sky": "clear"}'},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": ids[2], "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": ids[2], "content": "[1, 2]"},
        ],
    }


def test_a_second_turn_returns_calls_with_their_signature_and_results_by_name(shared: Shared) -> None:
    ids = streamed_call_ids(shared)
    url, upstream = script(shared, Reply(200, [answer_of(["It is 21.5 °C and clear."])]))
    assert post(url, second_turn(ids)).text == "It is 21.5 °C and clear."
    sent = upstream.seen[0].json
    assert sent["systemInstruction"] == {"parts": [{"text": "Use tools."}]}
    assert sent["contents"] == [
        {"role": "user", "parts": [{"text": "Weather and time in Zürich?"}]},
        {
            "role": "model",
            "parts": [
                {"text": "Let me check."},
                {"functionCall": {"name": "get_weather", "args": ARGS}, "thoughtSignature": SIGNATURE},
                {"functionCall": {"name": "get_time", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_time", "response": {"output": "14:05"}}},
                {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21.5, "sky": "clear"}}},
            ],
        },
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "[1, 2]"}}}]},
    ]
    model_turn = sdk_request(sent)["contents"][1]
    assert model_turn.parts[1].thought_signature == base64.b64decode(SIGNATURE)


def test_gemini_3_gets_the_documented_stand_in_for_calls_it_did_not_sign(shared: Shared) -> None:
    """Calls made elsewhere (another provider's ids): the first call of each step carries
    the signature Google documents for foreign history; a signed call keeps its own."""
    own = streamed_call_ids(shared)[0]
    url, upstream = script(shared, Reply(200, [answer_of(["ok"])]))
    assert post(url, second_turn(["toolu_01A", "toolu_01B", own], model="gemini-3.8-flash")).status == 200
    contents = upstream.seen[0].json["contents"]
    assert [p.get("thoughtSignature") for p in contents[1]["parts"]] == [None, FOREIGN_SIGNATURE, None]
    assert contents[3]["parts"][0]["thoughtSignature"] == SIGNATURE


@pytest.mark.parametrize(("arguments", "problem"), [('{"city": ', "not the JSON text"), ("[1]", "not the JSON text")])
def test_arguments_that_are_not_a_json_object_are_422(arguments: str, problem: str, shared: Shared) -> None:
    url, upstream = script(shared)
    body = second_turn(["call_1", "call_2", "call_3"])
    body["messages"][2]["tool_calls"][1]["function"]["arguments"] = arguments
    answer = post(url, body)
    assert answer.status == 422 and upstream.seen == []
    assert answer.json()["error"]["message"].startswith("$.messages[2].tool_calls[1].function.arguments: " + problem)


def test_a_tool_result_answering_no_call_is_422(shared: Shared) -> None:
    url, upstream = script(shared)
    body = {
        **HELLO,
        "messages": [{"role": "user", "content": "Hi"}, {"role": "tool", "tool_call_id": "call_x", "content": "1"}],
    }
    answer = post(url, body)
    assert answer.status == 422 and upstream.seen == []
    assert "$.messages[1].tool_call_id" in answer.json()["error"]["message"]


# --- images, stop, structured output --------------------------------------------------------

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR").decode()


def test_images_go_inline_or_as_file_data(shared: Shared) -> None:
    url, upstream = script(shared, Reply(200, [answer_of(["A cat."])]))
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cats/Tom.JPG?size=2", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/render?id=7"}},
    ]
    assert post(url, {**HELLO, "messages": [{"role": "user", "content": content}]}).text == "A cat."
    sent = upstream.seen[0].json
    assert sent["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "What is this?"},
                {"inlineData": {"mimeType": "image/png", "data": PNG}},
                {"fileData": {"fileUri": "https://example.com/cats/Tom.JPG?size=2", "mimeType": "image/jpeg"}},
                {"fileData": {"fileUri": "https://example.com/render?id=7"}},
            ],
        }
    ]
    parts = sdk_request(sent)["contents"][0].parts
    assert parts[1].inline_data.data == base64.b64decode(PNG)
    assert parts[2].file_data.file_uri == "https://example.com/cats/Tom.JPG?size=2"


def test_an_image_url_gemini_cannot_take_is_422_naming_the_part(shared: Shared) -> None:
    url, upstream = script(shared)
    content = [{"type": "text", "text": "Hi"}, {"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}]
    answer = post(url, {**HELLO, "messages": [{"role": "user", "content": content}]})
    assert answer.status == 422 and upstream.seen == []
    assert "$.messages[0].content[1].image_url.url" in answer.json()["error"]["message"]


@pytest.mark.parametrize(
    ("fields", "config"),
    [
        ({"stop": "END"}, {"stopSequences": ["END"]}),
        ({"stop": ["\n\n", "User:"], "max_tokens": 64}, {"stopSequences": ["\n\n", "User:"], "maxOutputTokens": 64}),
        ({"response_format": {"type": "text"}}, {}),
        ({"response_format": {"type": "json_object"}}, {"responseMimeType": "application/json"}),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "weather", "schema": WEATHER_SCHEMA, "strict": True},
                }
            },
            {"responseMimeType": "application/json", "responseJsonSchema": WEATHER_SCHEMA},
        ),
    ],
)
def test_stop_and_response_format_go_in_the_generation_config(
    fields: dict[str, Any], config: dict[str, Any], shared: Shared
) -> None:
    url, upstream = script(shared, Reply(200, [answer_of(["{}"])]))
    assert post(url, {**HELLO, "model": "gemini-2.0-flash", **fields}).status == 200
    sent = upstream.seen[0].json
    assert sent["generationConfig"] == config
    read = sdk_request(sent)["generationConfig"]
    assert (read.stop_sequences, read.response_mime_type, read.response_json_schema) == (
        config.get("stopSequences"),
        config.get("responseMimeType"),
        config.get("responseJsonSchema"),
    )


# --- the model list ---------------------------------------------------------------------------

MODEL_PAGES = [
    {
        "models": [
            {
                "name": "models/gemini-2.5-flash",
                "version": "001",
                "displayName": "Gemini 2.5 Flash",
                "description": "Stable version of Gemini 2.5 Flash",
                "inputTokenLimit": 1048576,
                "outputTokenLimit": 65536,
                "supportedGenerationMethods": [
                    "generateContent",
                    "countTokens",
                    "createCachedContent",
                    "batchGenerateContent",
                ],
                "temperature": 1,
                "topP": 0.95,
                "topK": 64,
                "maxTemperature": 2,
                "thinking": True,
            },
            {
                "name": "models/gemini-embedding-001",
                "version": "001",
                "displayName": "Gemini Embedding 001",
                "inputTokenLimit": 2048,
                "outputTokenLimit": 1,
                "supportedGenerationMethods": [
                    "embedContent",
                    "countTextTokens",
                    "countTokens",
                    "asyncBatchEmbedContent",
                ],
            },
        ],
        "nextPageToken": "Ch1tb2RlbHMvZ2VtaW5pLWVtYmVkZGluZy0wMDE=",
    },
    {
        "models": [
            {
                "name": "models/gemini-3.8-flash",
                "version": "3.8",
                "displayName": "Gemini 3.8 Flash",
                "inputTokenLimit": 1048576,
                "outputTokenLimit": 65536,
                "supportedGenerationMethods": ["generateContent", "countTokens", "batchGenerateContent"],
                "thinking": True,
            }
        ]
    },
]


def list_models(*replies: httpx2.Response, **overrides: Any) -> tuple[list[str] | BaseException, list[httpx2.Request]]:
    """`list_models()` against scripted `GET /v1beta/models` answers: its result (or what it
    raised) and the requests made."""
    seen: list[httpx2.Request] = []
    pending = list(replies)

    def handle(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return pending.pop(0)

    async def run() -> list[str]:
        config = settings(**{"gemini_api_key": KEY, "gemini_base_url": BASE_URL, **overrides})
        adapter = GeminiStreamAdapter(config, http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handle)))
        try:
            return await adapter.list_models()
        finally:
            await adapter.aclose()

    try:
        return asyncio.run(run()), seen
    except Exception as error:  # noqa: BLE001 - the test asserts what was raised
        return error, seen


def test_list_models_reads_every_page_and_keeps_the_generate_content_models() -> None:
    ids, seen = list_models(*(httpx2.Response(200, json=page) for page in MODEL_PAGES))
    assert ids == ["gemini-2.5-flash", "gemini-3.8-flash"]
    assert [(r.method, str(r.url)) for r in seen] == [
        ("GET", BASE_URL + "/v1beta/models?pageSize=1000"),
        ("GET", BASE_URL + "/v1beta/models?pageSize=1000&pageToken=Ch1tb2RlbHMvZ2VtaW5pLWVtYmVkZGluZy0wMDE%3D"),
    ]
    assert all(r.headers["x-goog-api-key"] == KEY for r in seen)


def test_list_models_raises_on_failure_or_without_a_key() -> None:
    error, _ = list_models(
        httpx2.Response(500, json={"error": {"code": 500, "message": "internal", "status": "INTERNAL"}})
    )
    assert isinstance(error, genai_errors.ServerError)
    error, seen = list_models(gemini_api_key=None)
    assert isinstance(error, ProviderAuthError) and seen == []


def test_the_default_model_comes_from_the_settings() -> None:
    upstream = MockUpstream(Reply(200, [answer_of(["ok"])]))
    with gateway(upstream, gemini_default_model="gemini-3.8-flash") as url:
        answer = post(url)
        health = httpx2.get(url + "/api/v1/chat/stream/health").json()["providers"]["gemini"]
    assert upstream.seen[0].url == BASE_URL + "/v1beta/models/gemini-3.8-flash:streamGenerateContent?alt=sse"
    assert upstream.seen[0].json["generationConfig"] == {"thinkingConfig": {"thinkingLevel": "LOW"}}
    assert {m["model"] for m in answer.messages} == {"gemini-3.8-flash"}
    assert health["default_model"] == "gemini-3.8-flash" and health["models"][:2] == [
        "gemini-3.8-flash",
        "gemini-2.5-flash",
    ]


@pytest.mark.parametrize("size", range(1, 9))
def test_a_call_id_gives_back_the_signature_it_was_made_with(size: int) -> None:
    """Every padding length, and `+` / `/` in the base64, survive the URL-safe id."""
    signature = base64.b64encode(bytes([0xFB, 0xFF, 0xBF] * 3)[:size]).decode()
    call = _ResponseFunctionCall("f", msgspec.Raw(b'{"a": [1, 2.50]}'))
    chunk = tool_call_chunk(4, call, signature)
    assert (chunk.index, chunk.name, chunk.arguments) == (4, "f", '{"a":[1,2.50]}')
    assert re.fullmatch(CALL_ID.pattern + r"\.[A-Za-z0-9_-]+", chunk.id or "")
    assert signature_of(chunk.id or "") == signature
    assert signature_of(tool_call_chunk(0, call, None).id or "") is None
    assert signature_of("call_" + "0" * 24 + ".abc/") is None and signature_of("toolu_01.abc") is None


# --- the direct path: sdk_http_client's client sends without building an httpx2.Request ---


def test_the_direct_path_sends_what_the_httpx2_client_sends() -> None:
    """The same request through `sdk_http_client` (straight to its transport) and through
    an `httpx2` client on the same transport that `sdk_http_client` did not make: the same
    path, headers and body reach a real loopback upstream, and both answer alike."""
    refusal = (400, b"".join(API_KEY_INVALID.pieces))
    upstream = ProviderUpstream().script(text_stream("gemini", ["same"]), refusal, text_stream("gemini", ["same"]))
    answers: list[str] = []
    with upstream.loopback.running():
        base = upstream.loopback.url.removesuffix("/v1")
        config = settings(gemini_api_key=KEY, gemini_base_url=base, upstream_max_retries=0)
        timeout = httpx2.Timeout(config.upstream_timeout_s)
        for http_client in (None, httpx2.AsyncClient(timeout=timeout, transport=UpstreamTransport())):
            adapter = GeminiStreamAdapter(config, http_client=http_client)
            with serve(create_app(config, adapters={"gemini": adapter})) as url:
                answers.append(post(url).text)
                if http_client is None:
                    failed = post(url)
        direct, _, through_httpx2 = upstream.seen
    assert answers == ["same", "same"]
    assert (direct.path, direct.body) == (through_httpx2.path, through_httpx2.body)
    assert direct.headers == through_httpx2.headers and direct.headers["x-goog-api-key"] == KEY
    assert (failed.status, failed.json()["error"]["type"]) == (401, "provider_auth_error")  # worded by the SDK
