"""The `openai` adapter end to end: our HTTP API → the real `openai` SDK → real HTTP bytes
from an upstream that speaks OpenAI's wire (`httpx2.MockTransport`, or a loopback server
where sockets matter)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from contextlib import AbstractContextManager
from typing import Any

import httpx2
import openai
import pytest
import support
from streamgate.errors import ProviderAuthError
from streamgate.providers.openai_stream import OPENAI_MODELS, OpenAIStreamAdapter
from support import Answer, closed_port, settings
from wire_openai import (
    SSE_HEAD,
    LoopbackUpstream,
    MockUpstream,
    Reply,
    call_arguments,
    call_start,
    chunk,
    completion,
    http_chunk,
    leave_mid_stream,
    openai_like,
    openai_refusal,
    reset,
    sdk_chunks,
    sdk_final,
    sdk_request_body,
    split,
    sse_body,
    tool_chunk,
    usage_chunk,
)

KEY = "sk-test-0123456789abcdef"
BASE_URL = "https://openai.upstream.test/v1"
HELLO = {"provider": "openai", "messages": [{"role": "user", "content": "Hello"}]}
TEXT = ["Hello", ", ", "世界", " 🙂🚀", "\nnew line"]
USAGE = {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}


def gateway(upstream: MockUpstream | None = None, **overrides: Any) -> AbstractContextManager[str]:
    """Our app serving the `openai` adapter (over `upstream`'s transport) on 127.0.0.1."""
    http_client = upstream.client() if upstream else None
    return support.gateway(
        lambda config: {"openai": OpenAIStreamAdapter(config, http_client=http_client)},
        **{"openai_api_key": KEY, "openai_base_url": BASE_URL, "upstream_max_retries": 2, **overrides},
    )


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
    assert messages[-1] == {
        "content": "",
        "finish_reason": "stop",
        "model": "gpt-4o",
        "provider": "openai",
        "usage": USAGE,
    }
    assert answer.events[-1].data == "[DONE]"


def test_what_is_sent_upstream() -> None:
    upstream = MockUpstream(Reply(200, [completion(["ok"])]))
    body = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "max_tokens": 50,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Again"},
        ],
    }
    with gateway(upstream) as url:
        assert post(url, body).text == "ok"
    (seen,) = upstream.seen
    assert (seen.method, seen.url) == ("POST", BASE_URL + "/chat/completions")
    assert seen.json == {
        "model": "gpt-4o-mini",
        "messages": body["messages"],
        "temperature": 0.2,
        "max_completion_tokens": 50,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert re.fullmatch(r"[0-9a-f]{32}", seen.headers["x-request-id"])
    assert seen.headers["accept"] == "application/json"


@pytest.mark.parametrize(
    ("upstream_reason", "ours"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("content_filter", "content_filter"),
        ("tool_calls", "tool_calls"),
        ("function_call", "tool_calls"),
        ("eos", "stop"),
    ],
)
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
    assert answer.json() == {
        "content": "".join(TEXT),
        "finish_reason": "length",
        "model": "gpt-4o",
        "provider": "openai",
        "usage": USAGE,
        "tool_calls": None,
    }


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
    upstream = MockUpstream(
        *(Reply.error(429, "Rate limit reached", {"retry-after": "0"}) for _ in range(2)),
        Reply.error(429, "Rate limit reached for gpt-4o", {"retry-after": "7"}),
    )
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
    assert error == {
        "type": "upstream_error",
        "message": "openai failed with HTTP 503: Service Unavailable",
        "provider": "openai",
    }
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
    assert answer.json()["error"] == {
        "type": "upstream_error",
        "message": "could not connect to openai",
        "provider": "openai",
    }


# --- after the 200: the error frames -------------------------------------------------------


def test_malformed_frame_mid_stream_ends_with_error_frames() -> None:
    body = sse_body([chunk(role="assistant"), chunk("Hel"), chunk("lo"), b'data: {"choices": [{"delta": \n\n'])
    with gateway(MockUpstream(Reply(200, [body]))) as url:
        answer = post(url)
    assert answer.status == 200
    assert answer.text == "Hello"
    assert_error_tail(answer, "upstream_error", "malformed upstream data")


def test_error_object_mid_stream_ends_with_error_frames() -> None:
    body = sse_body(
        [
            chunk("Hel"),
            {
                "error": {
                    "message": "The server had an error while processing your request.",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            },
        ]
    )
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
        writer.write(
            SSE_HEAD + http_chunk(sse_body([chunk(role="assistant"), chunk("a"), chunk("b"), chunk("c")], done=False))
        )
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


# --- reasoning models -----------------------------------------------------------------------

STREAMED = {"stream": True, "stream_options": {"include_usage": True}}
GPT_55 = "gpt-5.5-2026-04-23"  # what OpenAI names in its chunks for `gpt-5.5`


def reasoning_completion(pieces: list[str], reasoning_tokens: int = 128) -> bytes:
    """A `gpt-5.5` answer: text only (OpenAI streams no reasoning text on Chat Completions),
    the reasoning counted in the usage."""
    return sse_body(
        [
            chunk(role="assistant", model=GPT_55),
            *(chunk(p, model=GPT_55) for p in pieces),
            chunk(finish_reason="stop", model=GPT_55),
            usage_chunk(9, 140, model=GPT_55, reasoning_tokens=reasoning_tokens),
        ]
    )


def test_reasoning_model_streams_with_no_temperature_or_max_tokens_sent() -> None:
    body = reasoning_completion(TEXT)
    upstream = MockUpstream(Reply(200, split(body, 7)), check=openai_refusal)
    with gateway(upstream) as url:
        answer = post(url, {**HELLO, "model": "gpt-5.5"})
    assert answer.status == 200 and answer.text == "".join(TEXT)
    assert answer.messages[-1] == {
        "content": "",
        "finish_reason": "stop",
        "model": "gpt-5.5",
        "provider": "openai",
        "usage": {"prompt_tokens": 9, "completion_tokens": 140, "total_tokens": 149, "reasoning_tokens": 128},
    }
    assert upstream.seen[0].json == {"model": "gpt-5.5", "messages": HELLO["messages"], **STREAMED}
    assert sdk_chunks(body)[-1].usage.completion_tokens_details.reasoning_tokens == 128  # type: ignore[union-attr]


def test_gpt_55_and_gpt_4o_against_a_loopback_openai() -> None:
    """Over real sockets: `gpt-5.5` with nothing but the messages streams; `gpt-4o` with a
    temperature and a length limit streams as before; `gpt-5.5` with a temperature gets
    OpenAI's 400."""
    with openai_like(reasoning_completion(TEXT)).running() as upstream:
        with gateway(openai_base_url=upstream.url) as url:
            reasoning = post(url, {**HELLO, "model": "gpt-5.5"})
            plain = post(url, {**HELLO, "temperature": 0.7, "max_tokens": 64})
            refused = post(url, {**HELLO, "model": "gpt-5.5", "temperature": 0.7})
    assert reasoning.text == plain.text == "".join(TEXT)
    assert reasoning.messages[-1]["usage"]["reasoning_tokens"] == 128
    assert refused.status == 400 and "'temperature' does not support 0.7" in refused.json()["error"]["message"]
    sent = [json.loads(request.split(b"\r\n\r\n", 1)[1]) for request in upstream.requests]
    assert sent[:2] == [
        {"model": "gpt-5.5", "messages": HELLO["messages"], **STREAMED},
        {"model": "gpt-4o", "messages": HELLO["messages"], "temperature": 0.7, "max_completion_tokens": 64, **STREAMED},
    ]


def test_what_reasoning_and_other_models_are_sent() -> None:
    """`max_tokens` goes as `max_completion_tokens` to every model; `reasoning_effort` (or
    `thinking_enabled` → `medium`) only to a model that reasons. The upstream refuses what
    today's OpenAI refuses, so every one of these must stream."""
    cases = [
        ("gpt-5.5", {"max_tokens": 500}, {"max_completion_tokens": 500}),
        ("gpt-5.5", {"reasoning_effort": "high", "thinking_enabled": False}, {"reasoning_effort": "high"}),
        ("o4-mini", {"reasoning_effort": "none", "thinking_enabled": True}, {"reasoning_effort": "none"}),
        ("gpt-6.2-sol", {"thinking_enabled": True}, {"reasoning_effort": "medium"}),
        ("o3", {"thinking_enabled": False, "temperature": 1.0}, {"temperature": 1.0}),
        (
            "gpt-4o",
            {"reasoning_effort": "high", "max_tokens": 50, "temperature": 0.2},
            {"max_completion_tokens": 50, "temperature": 0.2},
        ),
        ("gpt-5-chat-latest", {"thinking_enabled": True}, {}),
        ("ft:o4-mini-2025-04-16:acme::B1x2y3z4", {"reasoning_effort": "low"}, {"reasoning_effort": "low"}),
    ]
    upstream = MockUpstream(*(Reply(200, [completion(["ok"])]) for _ in cases), check=openai_refusal)
    with gateway(upstream) as url:
        answers = [post(url, {**HELLO, "model": model, **asked}) for model, asked, _ in cases]
    assert [a.text for a in answers] == ["ok"] * len(cases)
    for seen, (model, _, sent) in zip(upstream.seen, cases, strict=True):
        assert seen.json == {"model": model, "messages": HELLO["messages"], **sent, **STREAMED}


def test_openai_refusing_a_temperature_passes_through_as_its_400() -> None:
    upstream = MockUpstream(check=openai_refusal)
    with gateway(upstream) as url:
        answer = post(url, {**HELLO, "model": "gpt-5.5", "temperature": 0.2})
    assert answer.status == 400
    assert answer.json()["error"] == {
        "type": "upstream_error",
        "provider": "openai",
        "message": "openai refused the request: Unsupported value: 'temperature' does not support 0.2 with this "
        "model. "
        "Only the default (1) value is supported.",
    }
    assert len(upstream.seen) == 1


def test_the_upstreams_refusals_read_as_openais_own_through_the_sdk() -> None:
    async def ask(**params: Any) -> None:
        client = openai.AsyncOpenAI(
            api_key=KEY, base_url=BASE_URL, max_retries=0, http_client=MockUpstream(check=openai_refusal).client()
        )
        await client.chat.completions.create(messages=[{"role": "user", "content": "hi"}], **params)

    for params, param, code in [
        ({"model": "o3", "max_tokens": 5}, "max_tokens", "unsupported_parameter"),
        ({"model": "gpt-5.5", "temperature": 0}, "temperature", "unsupported_value"),
        ({"model": "gpt-4o", "reasoning_effort": "low"}, "reasoning_effort", "unsupported_parameter"),
    ]:
        with pytest.raises(openai.BadRequestError) as refused:
            asyncio.run(ask(**params))
        assert (refused.value.param, refused.value.code) == (param, code)


def test_default_model_from_settings() -> None:
    upstream = MockUpstream(Reply(200, [reasoning_completion(["ok"])]), check=openai_refusal)
    with gateway(upstream, openai_default_model="gpt-5.5") as url:
        answer = post(url)
        health = httpx2.get(url + "/api/v1/chat/stream/health").json()["providers"]["openai"]
    assert answer.messages[-1]["model"] == "gpt-5.5" and upstream.seen[0].json["model"] == "gpt-5.5"
    assert health["default_model"] == "gpt-5.5"
    assert health["models"][0] == "gpt-5.5" and sorted(health["models"]) == sorted(OPENAI_MODELS)


# --- reasoning text from an OpenAI-compatible upstream ---------------------------------------


def reasoning_delta(text: str, field: str) -> dict[str, Any]:
    """A chunk whose delta carries reasoning text, as DeepSeek and vLLM send it
    (`reasoning_content`) or Together and OpenRouter (`reasoning`)."""
    body = chunk(model="deepseek-reasoner")
    body["choices"][0]["delta"] = {field: text}
    return body


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_text_streams_as_reasoning_frames_only_when_asked(field: str) -> None:
    thoughts = ["The user greets; ", "reply in kind 🙂"]
    body = sse_body(
        [
            chunk(role="assistant", model="deepseek-reasoner"),
            *(reasoning_delta(t, field) for t in thoughts),
            chunk("Hello!", model="deepseek-reasoner"),
            chunk(finish_reason="stop", model="deepseek-reasoner"),
            usage_chunk(9, 30, model="deepseek-reasoner", reasoning_tokens=21),
        ]
    )
    assert [c.choices[0].delta.model_extra[field] for c in sdk_chunks(body)[1:3]] == thoughts  # type: ignore[index]
    upstream = MockUpstream(Reply(200, split(body, 5)), Reply(200, [body]))
    with gateway(upstream) as url:
        asked = post(url, {**HELLO, "model": "deepseek-reasoner", "include_reasoning": True})
        not_asked = post(url, {**HELLO, "model": "deepseek-reasoner"})
    frames = [(e.event, json.loads(e.data)) for e in asked.events[:-1]]
    assert frames[:3] == [
        ("reasoning", {"reasoning": thoughts[0], "model": "deepseek-reasoner", "provider": "openai"}),
        ("reasoning", {"reasoning": thoughts[1], "model": "deepseek-reasoner", "provider": "openai"}),
        (
            "message",
            {
                "content": "Hello!",
                "finish_reason": None,
                "model": "deepseek-reasoner",
                "provider": "openai",
                "usage": None,
            },
        ),
    ]
    assert frames[3][1]["usage"] == {
        "prompt_tokens": 9,
        "completion_tokens": 30,
        "total_tokens": 39,
        "reasoning_tokens": 21,
    }
    assert [e.event for e in not_asked.events[:-1]] == ["message", "message"] and not_asked.text == "Hello!"


# --- tools ----------------------------------------------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time"}}
#: The weather call's arguments, cut mid-escape (`\` | `"`) and after an emoji.
WEATHER_ARGS = json.dumps({"city": 'Zürich "Altstadt" 🙂', "unit": "°C"}, ensure_ascii=False)
_CUT = WEATHER_ARGS.index("\\") + 1
WEATHER_PIECES = [WEATHER_ARGS[:_CUT], WEATHER_ARGS[_CUT : _CUT + 12], WEATHER_ARGS[_CUT + 12 :]]
TIME_PIECES = ['{"tz": ', '"Europe/Zurich"}']


def parallel_calls() -> bytes:
    """Text, then two calls whose argument fragments interleave, ended by `tool_calls`."""
    return sse_body(
        [
            chunk(role="assistant"),
            chunk("Let me check. "),
            tool_chunk(call_start(0, "call_w8Hq", "get_weather")),
            tool_chunk(call_arguments(0, WEATHER_PIECES[0])),
            tool_chunk(call_start(1, "call_t3Zp", "get_time")),
            tool_chunk(call_arguments(1, TIME_PIECES[0])),
            tool_chunk(call_arguments(0, WEATHER_PIECES[1])),
            tool_chunk(call_arguments(1, TIME_PIECES[1])),
            tool_chunk(call_arguments(0, WEATHER_PIECES[2])),
            chunk(finish_reason="tool_calls"),
            usage_chunk(40, 31),
        ]
    )


def test_parallel_calls_bytes_are_openais() -> None:
    final = sdk_final(parallel_calls())
    message = final.choices[0].message
    assert message.content == "Let me check. " and final.choices[0].finish_reason == "tool_calls"
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []] == [
        ("call_w8Hq", "get_weather", WEATHER_ARGS),
        ("call_t3Zp", "get_time", "".join(TIME_PIECES)),
    ]


@pytest.mark.parametrize("piece_size", [1, 7, 10_000])
def test_parallel_tool_calls_stream_as_tool_call_frames(piece_size: int) -> None:
    upstream = MockUpstream(Reply(200, split(parallel_calls(), piece_size)))
    request = {**HELLO, "tools": [WEATHER_TOOL, TIME_TOOL], "tool_choice": "required"}
    with gateway(upstream) as url:
        answer = post(url, request)
    frames = [(e.event, json.loads(e.data)) for e in answer.events[:-1]]
    assert [int(e.id) for e in answer.events[:-1]] == list(range(1, 10))
    assert frames == [
        (
            "message",
            {
                "content": "Let me check. ",
                "finish_reason": None,
                "model": "gpt-4o",
                "provider": "openai",
                "usage": None,
            },
        ),
        ("tool_call", {"index": 0, "id": "call_w8Hq", "name": "get_weather", "arguments": ""}),
        ("tool_call", {"index": 0, "arguments": WEATHER_PIECES[0]}),
        ("tool_call", {"index": 1, "id": "call_t3Zp", "name": "get_time", "arguments": ""}),
        ("tool_call", {"index": 1, "arguments": TIME_PIECES[0]}),
        ("tool_call", {"index": 0, "arguments": WEATHER_PIECES[1]}),
        ("tool_call", {"index": 1, "arguments": TIME_PIECES[1]}),
        ("tool_call", {"index": 0, "arguments": WEATHER_PIECES[2]}),
        (
            "message",
            {
                "content": "",
                "finish_reason": "tool_calls",
                "model": "gpt-4o",
                "provider": "openai",
                "usage": {"prompt_tokens": 40, "completion_tokens": 31, "total_tokens": 71},
            },
        ),
    ]
    (seen,) = upstream.seen
    assert seen.json == {
        "model": "gpt-4o",
        "messages": HELLO["messages"],
        "tools": [WEATHER_TOOL, TIME_TOOL],
        "tool_choice": "required",
        **STREAMED,
    }
    assert seen.json == sdk_request_body(
        model="gpt-4o", messages=HELLO["messages"], tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="required", **STREAMED
    )


def test_calls_split_across_tcp_reads_arrive_whole_in_the_json_answer() -> None:
    """Real socket reads cut inside `ü`, `🙂` and the escape; `/api/v1/chat` joins the calls."""
    body = parallel_calls()
    cuts = [body.index("ü".encode()) + 1, body.index("🙂".encode()) + 2, body.index(b"\\\\") + 1]

    async def behaviour(writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD)
        for start, end in zip([0, *sorted(cuts)], [*sorted(cuts), len(body)]):
            writer.write(http_chunk(body[start:end]))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")

    with LoopbackUpstream(behaviour).running() as upstream:
        with gateway(openai_base_url=upstream.url) as url:
            answer = post(url, {**HELLO, "tools": [WEATHER_TOOL, TIME_TOOL]}, path="/api/v1/chat")
    assert answer.json() == {
        "content": "Let me check. ",
        "finish_reason": "tool_calls",
        "model": "gpt-4o",
        "provider": "openai",
        "usage": {"prompt_tokens": 40, "completion_tokens": 31, "total_tokens": 71},
        "tool_calls": [
            {"id": "call_w8Hq", "type": "function", "function": {"name": "get_weather", "arguments": WEATHER_ARGS}},
            {
                "id": "call_t3Zp",
                "type": "function",
                "function": {"name": "get_time", "arguments": "".join(TIME_PIECES)},
            },
        ],
    }


def test_calls_keep_the_order_they_began_whatever_the_upstream_numbers_them() -> None:
    """An OpenAI-compatible server numbering its calls 1, 0 (or every call 0 with new ids):
    our indexes are 0, 1 in the order the calls began; a call with no id gets one."""
    body = sse_body(
        [
            tool_chunk(call_start(1, "call_b", "get_weather"), first=True),
            tool_chunk(call_arguments(1, '{"city":')),
            tool_chunk({"index": 0, "type": "function", "function": {"name": "get_time", "arguments": "{}"}}),
            tool_chunk(call_arguments(1, '"Oslo"}')),
            tool_chunk(call_start(1, "call_c", "get_time")),
            chunk(finish_reason="tool_calls"),
        ]
    )
    read = [(call.index, call.id) for piece in sdk_chunks(body) for call in piece.choices[0].delta.tool_calls or []]
    assert read == [(1, "call_b"), (1, None), (0, None), (1, None), (1, "call_c")]
    with gateway(MockUpstream(Reply(200, [body]))) as url:
        frames = [json.loads(e.data) for e in post(url).events if e.event == "tool_call"]
    made_id = frames[2].pop("id")
    assert re.fullmatch(r"call_[0-9a-f]{24}", made_id)
    assert frames == [
        {"index": 0, "id": "call_b", "name": "get_weather", "arguments": ""},
        {"index": 0, "arguments": '{"city":'},
        {"index": 1, "name": "get_time", "arguments": "{}"},
        {"index": 0, "arguments": '"Oslo"}'},
        {"index": 2, "id": "call_c", "name": "get_time", "arguments": ""},
    ]


def test_forced_call_with_empty_arguments_ends_as_tool_calls() -> None:
    """OpenAI ends a call forced by a named `tool_choice` with `stop`; a call whose
    arguments stay empty still has its frame."""
    body = sse_body(
        [tool_chunk(call_start(0, "call_e5", "get_time"), first=True), chunk(finish_reason="stop"), usage_chunk(20, 5)]
    )
    final = sdk_final(body)
    assert [(c.id, c.function.arguments) for c in final.choices[0].message.tool_calls or []] == [("call_e5", "")]
    forced = {"type": "function", "function": {"name": "get_time"}}
    upstream = MockUpstream(Reply(200, [body]), Reply(200, [body]))
    request = {**HELLO, "tools": [TIME_TOOL], "tool_choice": forced}
    with gateway(upstream) as url:
        streamed = post(url, request)
        whole = post(url, request, path="/api/v1/chat")
    assert [(e.event, json.loads(e.data)) for e in streamed.events[:-1]] == [
        ("tool_call", {"index": 0, "id": "call_e5", "name": "get_time", "arguments": ""}),
        (
            "message",
            {
                "content": "",
                "finish_reason": "tool_calls",
                "model": "gpt-4o",
                "provider": "openai",
                "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
            },
        ),
    ]
    assert whole.json()["tool_calls"] == [
        {"id": "call_e5", "type": "function", "function": {"name": "get_time", "arguments": ""}}
    ]
    assert upstream.seen[0].json["tool_choice"] == forced


# --- what else goes upstream as OpenAI's own ------------------------------------------------


TWO_TURNS = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "tool_calls": [
            {
                "id": "call_w8Hq",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_w8Hq", "content": "18°C, sunny"},
]
IMAGES = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAE="}},
            {"type": "image_url", "image_url": {"url": "https://upload.example.org/cat.jpg", "detail": "low"}},
        ],
    }
]
JSON_SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "weather",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


@pytest.mark.parametrize(
    ("messages", "fields"),
    [
        (TWO_TURNS, {"tools": [WEATHER_TOOL]}),
        (IMAGES, {}),
        (HELLO["messages"], {"stop": "END"}),
        (HELLO["messages"], {"stop": ["\n\n", "END"]}),
        (HELLO["messages"], {"response_format": {"type": "json_object"}}),
        (HELLO["messages"], {"response_format": JSON_SCHEMA}),
    ],
    ids=["two-turns", "images", "stop", "stops", "json_object", "json_schema"],
)
def test_request_fields_reach_openai_as_the_sdk_sends_them(messages: list[Any], fields: dict[str, Any]) -> None:
    upstream = MockUpstream(Reply(200, [completion(['{"city": "Paris"}'])]))
    with gateway(upstream) as url:
        answer = post(url, {**HELLO, "messages": messages, **fields})
    assert answer.text == '{"city": "Paris"}'
    expected = {"model": "gpt-4o", "messages": messages, **fields, **STREAMED}
    assert upstream.seen[0].json == expected == sdk_request_body(**expected)


# --- the model list ---------------------------------------------------------------------------


def model_card(model_id: str, owned_by: str = "system") -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1715367049, "owned_by": owned_by}


OPENAI_LIST = [
    model_card("gpt-4o"),
    model_card("text-embedding-3-small"),
    model_card("gpt-5.5"),
    model_card("o4-mini"),
    model_card("gpt-4o-mini-tts"),
    model_card("whisper-1", "openai-internal"),
    model_card("dall-e-3"),
    model_card("gpt-realtime"),
    model_card("gpt-image-1"),
    model_card("omni-moderation-latest"),
    model_card("gpt-4o-transcribe"),
    model_card("gpt-5.1-codex"),
    model_card("gpt-3.5-turbo-instruct"),
    model_card("ft:gpt-4o-mini-2024-07-18:acme::B1x2y3z4", "acme"),
]


def test_list_models_keeps_the_chat_models_openai_lists() -> None:
    body = json.dumps({"object": "list", "data": OPENAI_LIST}).encode()
    upstream = MockUpstream(
        Reply(200, [body], {"content-type": "application/json"}),
        Reply(200, [body], {"content-type": "application/json"}),
    )
    adapter = OpenAIStreamAdapter(settings(openai_api_key=KEY, openai_base_url=BASE_URL), http_client=upstream.client())
    models = asyncio.run(adapter.list_models())
    assert models == ["gpt-4o", "gpt-5.5", "o4-mini", "ft:gpt-4o-mini-2024-07-18:acme::B1x2y3z4"]
    (seen,) = upstream.seen
    assert (seen.method, seen.url, seen.headers["authorization"]) == ("GET", BASE_URL + "/models", f"Bearer {KEY}")

    async def sdk_ids() -> list[str]:
        client = openai.AsyncOpenAI(api_key=KEY, base_url=BASE_URL, http_client=upstream.client())
        return [model.id async for model in client.models.list()]

    assert asyncio.run(sdk_ids()) == [card["id"] for card in OPENAI_LIST]


def test_list_models_failure_raises() -> None:
    upstream = MockUpstream(Reply.error(401, "Incorrect API key provided."))
    adapter = OpenAIStreamAdapter(settings(openai_api_key=KEY, openai_base_url=BASE_URL), http_client=upstream.client())
    with pytest.raises(ProviderAuthError, match="OPENAI_API_KEY"):
        asyncio.run(adapter.list_models())
