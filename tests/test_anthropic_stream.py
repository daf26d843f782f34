"""The `anthropic` adapter end to end: our HTTP API → the real `anthropic` SDK → an
upstream that sends Anthropic's wire bytes (an `httpx2.MockTransport` whose body we
control read by read, or a loopback server on 127.0.0.1 where sockets matter)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

import anthropic
import httpx2
import pytest
import support
from anthropic.types import ModelInfo
from streamgate import sse
from streamgate.providers.anthropic_stream import AnthropicStreamAdapter
from support import settings
from test_anthropic_request import sdk_checked
from wire_anthropic import (
    BLOCK_START,
    BLOCK_STOP,
    MESSAGE_STOP,
    PING,
    SIGNATURE,
    block_delta,
    block_start,
    block_stop,
    event,
    message_delta,
    message_start,
    redacted_thinking_block,
    sdk_message,
    text_block,
    text_delta,
    thinking_block,
    tool_block,
    whole_stream,
)

KEY = "sk-ant-test-key"
DEFAULT_MODEL = "claude-sonnet-5-5"
HELLO = {"provider": "anthropic", "messages": [{"role": "user", "content": "Hello"}]}
TEXT_PIECES = ["Hello", ", 世界", " 🎉🚀 ", "naïve\nnext line", " 日本語です。"]


# --- Anthropic's wire (the builders are in `wire_anthropic`) --------------------------------

OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def answer(pieces: list[str] = TEXT_PIECES, stop_reason: str = "end_turn") -> list[bytes]:
    """A whole stream, event by event, as the Messages API documents it."""
    return [
        message_start(),
        BLOCK_START,
        PING,
        *map(text_delta, pieces),
        BLOCK_STOP,
        message_delta(stop_reason),
        MESSAGE_STOP,
    ]


def split_every(data: bytes, size: int) -> list[bytes]:
    """Network reads of `size` bytes: they split UTF-8 characters, lines and events."""
    return [data[i : i + size] for i in range(0, len(data), size)]


# --- an upstream behind httpx2.MockTransport -------------------------------------------


class Upstream:
    """Answers each request with the next scripted reply; records what was sent."""

    def __init__(self, *replies: httpx2.Response | list[bytes]) -> None:
        self.replies = list(replies)
        self.requests: list[httpx2.Request] = []

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, httpx2.Response):
            return reply
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body_of(reply))


async def body_of(reads: list[bytes]) -> AsyncIterator[bytes]:
    for read in reads:
        await asyncio.sleep(0)
        yield read


def error_reply(status: int, error_type: str, message: str, **headers: str) -> httpx2.Response:
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return httpx2.Response(status, json=body, headers=headers)


def gateway(
    upstream: Callable[[httpx2.Request], Awaitable[httpx2.Response]] | None = None, **overrides: Any
) -> AbstractContextManager[str]:
    """Our app on loopback with an `anthropic` adapter whose SDK talks to `upstream`
    (through `httpx2.MockTransport`) or, without one, to `ANTHROPIC_BASE_URL`."""
    http_client = httpx2.AsyncClient(transport=httpx2.MockTransport(upstream)) if upstream else None
    return support.gateway(
        lambda config: {"anthropic": AnthropicStreamAdapter(config, http_client=http_client)},
        **{"anthropic_api_key": KEY, "upstream_max_retries": 0, **overrides},
    )


def post(base_url: str, body: dict[str, Any] = HELLO, path: str = "/api/v1/chat/stream") -> httpx2.Response:
    return httpx2.post(base_url + path, json=body, timeout=10)


def message_frames(raw: bytes) -> list[dict[str, Any]]:
    """The data of every `message` frame, after checking the stream ends with `[DONE]`."""
    events = [e for e in sse.Decoder().feed(raw) if isinstance(e, sse.Event)]
    assert events[-1].data == "[DONE]" and raw.endswith(b"data: [DONE]\n\n")
    messages = [e for e in events if e.event == "message" and e.data != "[DONE]"]
    assert [int(e.id) for e in messages] == list(range(1, len(messages) + 1))
    return [json.loads(e.data) for e in messages]


def error_frame(raw: bytes) -> dict[str, Any]:
    """The one `event: error` frame, which comes right before `[DONE]`."""
    events = [e for e in sse.Decoder().feed(raw) if isinstance(e, sse.Event)]
    assert [e.event for e in events[-2:]] == ["error", "message"] and events[-1].data == "[DONE]"
    assert sum(e.event == "error" for e in events) == 1
    return json.loads(events[-2].data)


def chunk(content: str, finish_reason: str | None = None, usage: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "content": content,
        "finish_reason": finish_reason,
        "model": DEFAULT_MODEL,
        "provider": "anthropic",
        "usage": usage,
    }


USAGE = {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}


# --- the stream ---------------------------------------------------------------------------


@pytest.mark.parametrize("read_size", [1, 7, 4096])
def test_named_events_become_exact_frames(read_size: int) -> None:
    upstream = Upstream(split_every(b"".join(answer()), read_size))
    with gateway(upstream) as base_url:
        response = post(base_url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert message_frames(response.content) == [*map(chunk, TEXT_PIECES), chunk("", "stop", USAGE)]
    assert "".join(TEXT_PIECES) == "Hello, 世界 🎉🚀 naïve\nnext line 日本語です。"


def test_what_is_sent_upstream() -> None:
    upstream = Upstream(answer())
    body = {
        "provider": "anthropic",
        "temperature": 0.2,
        "max_tokens": 77,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "How are you? 🎉"},
        ],
    }
    with gateway(upstream, anthropic_base_url="http://anthropic.test") as base_url:
        assert post(base_url, body).status_code == 200
    [request] = upstream.requests
    assert (request.method, str(request.url)) == ("POST", "http://anthropic.test/v1/messages")
    assert json.loads(request.content) == {
        "model": DEFAULT_MODEL,
        "max_tokens": 77,
        "system": "Be brief.\n\nAnswer in French.",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "How are you? 🎉"},
        ],
        "stream": True,
    }  # no `temperature`: the pinned SDK's `messages.create` takes none
    # the pinned SDK sends the key as a bearer token (no `x-api-key`) and API version 2026-10-21.
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert "x-api-key" not in request.headers
    assert request.headers["anthropic-version"] == "2026-10-21"
    assert request.headers["x-stainless-retry-count"] == "0"


def test_no_system_parameter_without_system_messages_and_model_chosen() -> None:
    upstream = Upstream(answer(["ok"]))
    body = {**HELLO, "model": "claude-haiku-5-5"}
    with gateway(upstream) as base_url:
        frames = message_frames(post(base_url, body).content)
    sent = json.loads(upstream.requests[0].content)
    assert "system" not in sent and sent["model"] == "claude-haiku-5-5" and sent["max_tokens"] == 16384
    assert frames[0]["model"] == "claude-haiku-5-5"


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "length"),
        ("model_context_window_exceeded", "length"),
        ("some_future_reason", "stop"),
    ],
)
def test_stop_reasons_are_mapped(stop_reason: str, finish_reason: str) -> None:
    with gateway(Upstream(answer(["Hi"], stop_reason))) as base_url:
        response = post(base_url, path="/api/v1/chat")
    assert response.status_code == 200
    assert response.json() == {**chunk("Hi", finish_reason, USAGE), "tool_calls": None}


def test_prompt_tokens_include_cache_tokens_and_later_usage_wins() -> None:
    reads = [
        message_start(10, cache_creation_input_tokens=200, cache_read_input_tokens=3000),
        text_delta("cached"),
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"input_tokens": 12, "cache_read_input_tokens": None, "output_tokens": 6},
            },
        ),
        MESSAGE_STOP,
    ]
    with gateway(Upstream(reads)) as base_url:
        frames = message_frames(post(base_url).content)
    assert frames[-1] == chunk(
        "",
        "stop",
        {
            "prompt_tokens": 3212,
            "completion_tokens": 6,
            "total_tokens": 3218,
            "cached_tokens": 3000,
            "cache_creation_tokens": 200,
        },
    )


def test_whole_answer_at_once() -> None:
    with gateway(Upstream(split_every(b"".join(answer()), 5))) as base_url:
        response = post(base_url, path="/api/v1/chat")
    assert response.status_code == 200
    assert response.json() == {**chunk("".join(TEXT_PIECES), "stop", USAGE), "tool_calls": None}


# --- thinking, tools, images, structured output ----------------------------------------------


THOUGHTS = ["The user greets me; ", "a short, warm reply — ", "日本語 fits. 🎉"]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SENT_WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather now in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.mark.parametrize("stop_reason", ["end_turn", "max_tokens", "tool_use", "refusal", "pause_turn"])
def test_the_scripted_text_stream_is_what_the_sdk_reads(stop_reason: str) -> None:
    message = sdk_message(answer(stop_reason=stop_reason))
    assert [b.text for b in message.content] == ["".join(TEXT_PIECES)]  # type: ignore[union-attr]
    assert (message.stop_reason, message.usage.input_tokens, message.usage.output_tokens) == (stop_reason, 25, 15)


def frames(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Every frame (kind, data) before `[DONE]`, after checking ids run 1, 2, 3, …."""
    events = [e for e in sse.Decoder().feed(raw) if isinstance(e, sse.Event)]
    assert events[-1].data == "[DONE]" and raw.endswith(b"data: [DONE]\n\n")
    assert [int(e.id) for e in events[:-1]] == list(range(1, len(events)))
    return [(e.event, json.loads(e.data)) for e in events[:-1]]


def reasoning(text: str) -> tuple[str, dict[str, Any]]:
    return "reasoning", {"reasoning": text, "model": DEFAULT_MODEL, "provider": "anthropic"}


def tool_call(index: int, **fields: str) -> tuple[str, dict[str, Any]]:
    return "tool_call", {"index": index, **fields}


REASONING_ASKED = {**HELLO, "model": "claude-sonnet-5-5", "reasoning_effort": "high", "include_reasoning": True}


@pytest.mark.parametrize("read_size", [1, 4096])
def test_thinking_streams_as_reasoning_frames_when_asked(read_size: int) -> None:
    reads = whole_stream(thinking_block(0, THOUGHTS), text_block(1, TEXT_PIECES), thinking_tokens=40)
    message = sdk_message(reads)
    assert [(b.type, getattr(b, "thinking", None)) for b in message.content] == [
        ("thinking", "".join(THOUGHTS)),
        ("text", None),
    ]
    assert message.content[0].signature == SIGNATURE  # type: ignore[union-attr]
    assert message.usage.output_tokens_details.thinking_tokens == 40  # type: ignore[union-attr]
    upstream = Upstream(split_every(b"".join(reads), read_size))
    with gateway(upstream) as base_url:
        response = post(base_url, REASONING_ASKED)
    assert sdk_checked(json.loads(upstream.requests[0].content)) == {
        "model": "claude-sonnet-5-5",
        "max_tokens": 16384,
        "stream": True,
        "messages": [{"role": "user", "content": "Hello"}],
        "thinking": {"type": "adaptive", "display": "summarized"},
        "output_config": {"effort": "high"},
    }
    usage = {"prompt_tokens": 25, "completion_tokens": 90, "total_tokens": 115, "reasoning_tokens": 40}
    assert frames(response.content) == [
        *map(reasoning, THOUGHTS),
        *(("message", chunk(p)) for p in TEXT_PIECES),
        ("message", chunk("", "stop", usage)),
    ]


def test_thinking_without_include_reasoning_never_reaches_the_client() -> None:
    reads = whole_stream(thinking_block(0, THOUGHTS), redacted_thinking_block(1), text_block(2, ["Hi there!"]))
    assert [b.type for b in sdk_message(reads).content] == ["thinking", "redacted_thinking", "text"]
    upstream = Upstream(reads)
    with gateway(upstream) as base_url:
        streamed = post(base_url, {**HELLO, "reasoning_effort": "medium"})
        whole = post(base_url, {**HELLO, "reasoning_effort": "medium"}, path="/api/v1/chat")
    sent = json.loads(upstream.requests[0].content)
    assert (sent["thinking"], sent["output_config"]) == ({"type": "adaptive"}, {"effort": "medium"})
    usage = {"prompt_tokens": 25, "completion_tokens": 90, "total_tokens": 115}
    assert frames(streamed.content) == [("message", chunk("Hi there!")), ("message", chunk("", "stop", usage))]
    assert whole.json() == {**chunk("Hi there!", "stop", usage), "tool_calls": None}


def test_whole_answer_carries_the_reasoning_when_asked() -> None:
    reads = whole_stream(thinking_block(0, THOUGHTS), redacted_thinking_block(1), text_block(2, TEXT_PIECES))
    with gateway(Upstream(reads)) as base_url:
        response = post(base_url, REASONING_ASKED, path="/api/v1/chat")
    usage = {"prompt_tokens": 25, "completion_tokens": 90, "total_tokens": 115}
    assert response.json() == {
        **chunk("".join(TEXT_PIECES), "stop", usage),
        "tool_calls": None,
        "reasoning": "".join(THOUGHTS),
    }


#: A call's JSON split mid-escape (a fragment ends in the backslash of `\"`); read one byte
#: at a time it is also split inside `日本` and `ü`.
PARIS_FRAGMENTS = ["", '{"city": "Par', 'is", "note": "say \\', '"hi\\" — 日本', '"}']
ZURICH_FRAGMENTS = ['{"city":', ' "Zürich"}']


def parallel_calls() -> list[bytes]:
    """Thinking (block 0), text (block 1), then two calls (blocks 2 and 3)."""
    return whole_stream(
        thinking_block(0, THOUGHTS),
        text_block(1, ["Let me check both cities."]),
        tool_block(2, "toolu_01A", "get_weather", PARIS_FRAGMENTS),
        tool_block(3, "toolu_01B", "get_weather", ZURICH_FRAGMENTS),
        stop_reason="tool_use",
    )


@pytest.mark.parametrize("read_size", [1, 3, 4096])
def test_parallel_tool_calls_after_text(read_size: int) -> None:
    reads = parallel_calls()
    calls = [b for b in sdk_message(reads).content if b.type == "tool_use"]
    assert [(c.id, c.input) for c in calls] == [  # type: ignore[union-attr]
        ("toolu_01A", {"city": "Paris", "note": 'say "hi" — 日本'}),
        ("toolu_01B", {"city": "Zürich"}),
    ]
    upstream = Upstream(split_every(b"".join(reads), read_size))
    body = {**HELLO, "tools": [WEATHER_TOOL], "tool_choice": "auto"}
    with gateway(upstream) as base_url:
        response = post(base_url, body)
    sent = sdk_checked(json.loads(upstream.requests[0].content))
    assert (sent["tools"], sent["tool_choice"]) == ([SENT_WEATHER_TOOL], {"type": "auto"})
    usage = {"prompt_tokens": 25, "completion_tokens": 90, "total_tokens": 115}
    assert frames(response.content) == [
        ("message", chunk("Let me check both cities.")),
        tool_call(0, id="toolu_01A", name="get_weather", arguments=""),
        *(tool_call(0, arguments=f) for f in PARIS_FRAGMENTS if f),
        tool_call(1, id="toolu_01B", name="get_weather", arguments=""),
        *(tool_call(1, arguments=f) for f in ZURICH_FRAGMENTS),
        ("message", chunk("", "tool_calls", usage)),
    ]


def test_whole_answer_carries_the_tool_calls() -> None:
    with gateway(Upstream(split_every(b"".join(parallel_calls()), 2))) as base_url:
        response = post(base_url, {**HELLO, "tools": [WEATHER_TOOL]}, path="/api/v1/chat")
    usage = {"prompt_tokens": 25, "completion_tokens": 90, "total_tokens": 115}
    assert response.json() == {
        **chunk("Let me check both cities.", "tool_calls", usage),
        "tool_calls": [
            {
                "id": "toolu_01A",
                "type": "function",
                "function": {"name": "get_weather", "arguments": "".join(PARIS_FRAGMENTS)},
            },
            {
                "id": "toolu_01B",
                "type": "function",
                "function": {"name": "get_weather", "arguments": "".join(ZURICH_FRAGMENTS)},
            },
        ],
    }
    assert json.loads(response.json()["tool_calls"][0]["function"]["arguments"])["note"] == 'say "hi" — 日本'


@pytest.mark.parametrize("fragments", [[""], []], ids=["empty-fragment", "no-fragment"])
def test_call_without_arguments_has_arguments_braces(fragments: list[str]) -> None:
    reads = whole_stream(tool_block(0, "toolu_01N", "now", fragments), stop_reason="tool_use", output_tokens=12)
    assert [(b.name, b.input) for b in sdk_message(reads).content] == [("now", {})]  # type: ignore[union-attr]
    body = {**HELLO, "tools": [{"type": "function", "function": {"name": "now"}}], "tool_choice": "none"}
    upstream = Upstream(reads)
    with gateway(upstream) as base_url:
        response = post(base_url, body)
    sent = json.loads(upstream.requests[0].content)
    assert (sent["tools"], sent["tool_choice"]) == (
        [{"name": "now", "input_schema": {"type": "object"}}],
        {"type": "none"},
    )
    assert frames(response.content) == [
        tool_call(0, id="toolu_01N", name="now", arguments=""),
        tool_call(0, arguments="{}"),
        ("message", chunk("", "tool_calls", {"prompt_tokens": 25, "completion_tokens": 12, "total_tokens": 37})),
    ]


def test_server_tool_blocks_and_citations_are_not_calls_or_content() -> None:
    citation = {
        "type": "web_search_result_location",
        "cited_text": "Paris: 18°C",
        "encrypted_index": "Eo8BCioI",
        "title": "Weather",
        "url": "https://weather.example/paris",
    }
    reads = whole_stream(
        [
            block_start(0, {"type": "server_tool_use", "id": "srvtoolu_01", "name": "web_search", "input": {}}),
            block_delta(0, {"type": "input_json_delta", "partial_json": '{"query": "weather Paris"}'}),
            block_stop(0),
        ],
        [
            block_start(1, {"type": "text", "text": ""}),
            block_delta(1, {"type": "citations_delta", "citation": citation}),
            text_delta("It is 18°C.", 1),
            block_stop(1),
        ],
        tool_block(2, "toolu_01C", "get_weather", ['{"city": "Lyon"}']),
        stop_reason="tool_use",
    )
    assert [b.type for b in sdk_message(reads).content] == ["server_tool_use", "text", "tool_use"]
    with gateway(Upstream(reads)) as base_url:
        response = post(base_url, {**HELLO, "tools": [WEATHER_TOOL]})
    assert frames(response.content) == [
        ("message", chunk("It is 18°C.")),
        tool_call(0, id="toolu_01C", name="get_weather", arguments=""),
        tool_call(0, arguments='{"city": "Lyon"}'),
        ("message", chunk("", "tool_calls", {"prompt_tokens": 25, "completion_tokens": 90, "total_tokens": 115})),
    ]


def test_two_turn_request_sends_tool_use_and_tool_result_blocks() -> None:
    upstream = Upstream(answer(["Paris is warmer."]))
    calls = [
        {"id": "toolu_01A", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {
            "id": "toolu_01B",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":  "Zürich"}'},
        },
    ]
    body = {
        **REASONING_ASKED,
        "tools": [WEATHER_TOOL],
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris and Zürich?"},
            {"role": "assistant", "content": "Checking both.", "tool_calls": calls},
            {"role": "tool", "tool_call_id": "toolu_01A", "content": "18°C, sunny"},
            {"role": "tool", "tool_call_id": "toolu_01B", "content": [{"type": "text", "text": "12°C"}]},
            {"role": "user", "content": "Which is warmer?"},
        ],
    }
    with gateway(upstream) as base_url:
        response = post(base_url, body)
    assert message_frames(response.content)[0] == chunk("Paris is warmer.")
    raw = upstream.requests[0].content
    assert b'"input":{"city":  "Z\xc3\xbcrich"}' in raw, "arguments pass through as the client wrote them"
    sent = sdk_checked(json.loads(raw))
    assert sent["system"] == "Be brief."
    assert (sent["thinking"], sent["output_config"]) == (
        {"type": "adaptive", "display": "summarized"},
        {"effort": "high"},
    ), "adaptive thinking takes the turn as is"
    assert sent["messages"] == [
        {"role": "user", "content": "Weather in Paris and Zürich?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"city": "Zürich"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18°C, sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_01B", "content": [{"type": "text", "text": "12°C"}]},
                {"type": "text", "text": "Which is warmer?"},
            ],
        },
    ]


def test_invalid_call_arguments_are_422_before_any_upstream_call() -> None:
    upstream = Upstream(answer())
    calls = [{"id": "toolu_01A", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": '}}]
    body = {
        **HELLO,
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "tool_calls": calls},
            {"role": "tool", "tool_call_id": "toolu_01A", "content": "18°C"},
        ],
    }
    with gateway(upstream) as base_url:
        response = post(base_url, body)
    assert response.status_code == 422
    assert response.json() == {
        "error": {
            "type": "invalid_request",
            "provider": "anthropic",
            "message": "$.messages[1].tool_calls[0].function.arguments: not a JSON object",
        }
    }
    assert upstream.requests == []


PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def test_image_parts_become_image_blocks_in_order() -> None:
    upstream = Upstream(answer(["A red dot and a cat."]))
    content = [
        {"type": "text", "text": "What are these?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_BASE64}"}},
        {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/cat.jpg", "detail": "low"}},
    ]
    with gateway(upstream) as base_url:
        response = post(base_url, {**HELLO, "messages": [{"role": "user", "content": content}]})
    assert message_frames(response.content)[0] == chunk("A red dot and a cat.")
    assert sdk_checked(json.loads(upstream.requests[0].content))["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What are these?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_BASE64}},
                {"type": "image", "source": {"type": "url", "url": "https://upload.wikimedia.org/cat.jpg"}},
            ],
        }
    ]


def test_structured_output_and_stop_sequences() -> None:
    pieces = ['{"city": ', '"Paris", "temp', '": 18}']
    reads = whole_stream(text_block(0, pieces), stop_reason="stop_sequence", output_tokens=9)
    assert sdk_message(reads).content[0].text == '{"city": "Paris", "temp": 18}'  # type: ignore[union-attr]
    upstream = Upstream(reads)
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}}}
    body = {
        **HELLO,
        "stop": ["\n\nEND"],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "weather", "schema": schema, "strict": True},
        },
    }
    with gateway(upstream) as base_url:
        response = post(base_url, body, path="/api/v1/chat")
    sent = sdk_checked(json.loads(upstream.requests[0].content))
    assert sent["stop_sequences"] == ["\n\nEND"]
    assert sent["output_config"] == {
        "format": {
            "type": "json_schema",
            "schema": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}},
            },
        }
    }
    assert response.json() == {
        **chunk(
            '{"city": "Paris", "temp": 18}', "stop", {"prompt_tokens": 25, "completion_tokens": 9, "total_tokens": 34}
        ),
        "tool_calls": None,
    }


def test_json_object_is_an_object_schema() -> None:
    upstream = Upstream(answer(['{"ok": true}']))
    with gateway(upstream) as base_url:
        post(base_url, {**HELLO, "response_format": {"type": "json_object"}})
    assert json.loads(upstream.requests[0].content)["output_config"] == {
        "format": {"type": "json_schema", "schema": {"type": "object"}}
    }


def test_default_model_from_settings() -> None:
    upstream = Upstream(answer(["ok"]))
    with gateway(upstream, anthropic_default_model="claude-opus-4-8") as base_url:
        post(base_url)
        health = httpx2.get(base_url + "/api/v1/chat/stream/health").json()["providers"]["anthropic"]
    assert json.loads(upstream.requests[0].content)["model"] == "claude-opus-4-8"
    assert health["default_model"] == "claude-opus-4-8"
    assert health["models"][:2] == ["claude-opus-4-8", "claude-sonnet-5-5"]
    assert health["models"].count("claude-opus-4-8") == 1


# --- list_models ---------------------------------------------------------------------------


def model_info(model_id: str, display_name: str, lifecycle: str = "active") -> dict[str, Any]:
    retired = lifecycle == "retired"
    return {
        "type": "model",
        "id": model_id,
        "display_name": display_name,
        "created_at": "2025-05-14T00:00:00Z",
        "lifecycle": lifecycle,
        "deprecated_at": "2026-01-05T00:00:00Z" if retired else None,
        "retires_at": None,
        "max_input_tokens": 1000000,
        "max_tokens": 128000,
    }


def test_list_models_reads_every_page_through_the_sdk_and_leaves_retired_ones_out() -> None:
    pages = [
        {
            "data": [
                model_info("claude-sonnet-5-5", "Claude Sonnet 5.5"),
                model_info("claude-opus-5-5", "Claude Opus 5.5"),
            ],
            "has_more": True,
            "first_id": "claude-sonnet-5-5",
            "last_id": "claude-opus-5-5",
        },
        {
            "data": [
                model_info("claude-haiku-4-5-20251001", "Claude Haiku 4.5"),
                model_info("claude-sonnet-4-20250514", "Claude Sonnet 4", "retired"),
            ],
            "has_more": False,
            "first_id": "claude-haiku-4-5-20251001",
            "last_id": "claude-sonnet-4-20250514",
        },
    ]
    for page in pages:
        for card in page["data"]:
            ModelInfo.model_validate(card)
    upstream = Upstream(*(httpx2.Response(200, json=page) for page in pages))
    config = settings(anthropic_api_key=KEY, anthropic_base_url="http://anthropic.test")
    adapter = AnthropicStreamAdapter(config, http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(upstream)))
    assert asyncio.run(adapter.list_models()) == ["claude-sonnet-5-5", "claude-opus-5-5", "claude-haiku-4-5-20251001"]
    assert [(r.method, str(r.url)) for r in upstream.requests] == [
        ("GET", "http://anthropic.test/v1/models?limit=1000"),
        ("GET", "http://anthropic.test/v1/models?limit=1000&after_id=claude-opus-5-5"),
    ]


def test_list_models_raises_on_failure() -> None:
    upstream = Upstream(error_reply(401, "authentication_error", "invalid x-api-key"))
    adapter = AnthropicStreamAdapter(
        settings(anthropic_api_key=KEY), http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(upstream))
    )
    with pytest.raises(anthropic.AuthenticationError):
        asyncio.run(adapter.list_models())


# --- before the 200 -----------------------------------------------------------------------


def test_missing_key_refuses_without_calling_upstream() -> None:
    upstream = Upstream(answer())
    with gateway(upstream, anthropic_api_key=None) as base_url:
        response = post(base_url)
        health = httpx2.get(base_url + "/api/v1/chat/stream/health").json()
    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "type": "provider_auth_error",
            "provider": "anthropic",
            "message": "anthropic is not configured; set ANTHROPIC_API_KEY",
        }
    }
    assert upstream.requests == []
    assert health["providers"]["anthropic"]["configured"] is False
    assert health["providers"]["anthropic"]["models"][0] == DEFAULT_MODEL


def test_rejected_key_is_provider_auth_error() -> None:
    upstream = Upstream(error_reply(401, "authentication_error", "invalid x-api-key"))
    with gateway(upstream, upstream_max_retries=2) as base_url:
        response = post(base_url)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "provider_auth_error" and "ANTHROPIC_API_KEY" in error["message"]
    assert KEY not in response.text
    assert len(upstream.requests) == 1, "a rejected key is not retried"


def test_rate_limit_passes_retry_after_on() -> None:
    upstream = Upstream(
        error_reply(
            429, "rate_limit_error", "Number of request tokens has exceeded your limit", **{"retry-after": "17"}
        )
    )
    with gateway(upstream) as base_url:
        response = post(base_url)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "17"
    assert response.json()["error"]["type"] == "rate_limited"
    assert "Number of request tokens has exceeded your limit" in response.json()["error"]["message"]


def test_upstream_4xx_passes_through_with_its_message() -> None:
    upstream = Upstream(error_reply(400, "invalid_request_error", "max_tokens: 100000 > 64000"))
    with gateway(upstream, upstream_max_retries=2) as base_url:
        response = post(base_url)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "upstream_error"
    assert "max_tokens: 100000 > 64000" in response.json()["error"]["message"]
    assert len(upstream.requests) == 1


def test_server_error_then_success_is_retried() -> None:
    upstream = Upstream(error_reply(500, "api_error", "Internal server error"), answer())
    with gateway(upstream, upstream_max_retries=2) as base_url:
        response = post(base_url)
    assert response.status_code == 200
    assert "".join(f["content"] for f in message_frames(response.content)) == "".join(TEXT_PIECES)
    assert [r.headers["x-stainless-retry-count"] for r in upstream.requests] == ["0", "0"]
    assert len(upstream.requests) == 2


@pytest.mark.parametrize(
    ("status", "error_type", "message"),
    [
        (500, "api_error", "Internal server error"),
        (529, "overloaded_error", "Overloaded"),
    ],
)
def test_persistent_server_error_is_502(status: int, error_type: str, message: str) -> None:
    upstream = Upstream(error_reply(status, error_type, message))
    with gateway(upstream, upstream_max_retries=1) as base_url:
        response = post(base_url)
    assert response.status_code == 502
    assert response.json() == {
        "error": {
            "type": "upstream_error",
            "provider": "anthropic",
            "message": f"anthropic failed with HTTP {status}: {message}",
        }
    }
    assert len(upstream.requests) == 2


# --- after the 200 ------------------------------------------------------------------------


def test_mid_stream_error_event_ends_with_error_frames() -> None:
    reads = [message_start(), BLOCK_START, text_delta("Hel"), text_delta("lo"), event("error", OVERLOADED)]
    with gateway(Upstream(reads)) as base_url:
        response = post(base_url)
    assert response.status_code == 200
    assert message_frames(response.content) == [chunk("Hel"), chunk("lo"), chunk("", "error")]
    assert error_frame(response.content) == {
        "error": {
            "type": "upstream_error",
            "provider": "anthropic",
            "message": "anthropic failed mid-stream: Overloaded (overloaded_error)",
        }
    }


@pytest.mark.parametrize("bad_data", [b"{not json", b'{"type": "content_block_delta", "delta": "x"}'])
def test_malformed_frame_is_upstream_error(bad_data: bytes) -> None:
    reads = [
        message_start(),
        text_delta("Hi"),
        b"event: content_block_delta\ndata: " + bad_data + b"\n\n",
        text_delta("never sent"),
    ]
    with gateway(Upstream(reads)) as base_url:
        response = post(base_url)
    assert message_frames(response.content) == [chunk("Hi"), chunk("", "error")]
    assert error_frame(response.content)["error"]["message"] == "anthropic sent malformed stream data"


def test_stream_without_message_stop_is_upstream_error() -> None:
    reads = [message_start(), text_delta("Hi"), message_delta()]
    with gateway(Upstream(reads)) as base_url:
        response = post(base_url)
    assert message_frames(response.content) == [chunk("Hi"), chunk("", "error")]
    assert error_frame(response.content)["error"] == {
        "type": "upstream_error",
        "provider": "anthropic",
        "message": "anthropic ended the stream before message_stop",
    }


# --- a loopback upstream: real sockets for resets, stalls and disconnects -------------------


Script = Callable[[asyncio.StreamWriter], Awaitable[None]]


class LoopbackUpstream:
    """An HTTP/1.1 server on 127.0.0.1 (in its own thread) that runs `script` for each
    request and records when the client closed each connection."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.closed_at: list[float] = []
        self.requests = self.connections = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self.handle, "127.0.0.1", 0), self.loop
        ).result(5)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def __exit__(self, *exc_info: object) -> None:
        async def stop() -> None:
            self.server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve requests on one connection (keep-alive) until the client closes it."""
        self.connections += 1
        scripts: list[asyncio.Future[None]] = []
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).lower()
                length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                self.requests += 1
                scripts.append(asyncio.ensure_future(self.script(writer)))
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_at.append(time.monotonic())
        finally:
            for script in scripts:
                script.cancel()
            writer.close()


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


async def send_events(writer: asyncio.StreamWriter, *events: bytes) -> None:
    writer.write(b"".join(map(http_chunk, events)))
    await writer.drain()


def test_loopback_stream_completes_and_connection_is_reused() -> None:
    async def script(writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD)
        await send_events(writer, *answer())
        await asyncio.sleep(0.05)  # the chunked body's end comes a moment after message_stop
        writer.write(b"0\r\n\r\n")

    upstream = LoopbackUpstream(script)
    with upstream as upstream_url, gateway(anthropic_base_url=upstream_url) as base_url:
        first, second = post(base_url), post(base_url)
    for response in (first, second):
        assert message_frames(response.content) == [*map(chunk, TEXT_PIECES), chunk("", "stop", USAGE)]
    assert (upstream.connections, upstream.requests) == (1, 2), "the body was read to its end, so kept alive"


def test_connection_reset_mid_stream_is_upstream_error() -> None:
    async def script(writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD)
        await send_events(writer, message_start(), text_delta("Hel"), text_delta("lo"))
        await asyncio.sleep(0.05)
        writer.transport.abort()  # gone without the chunked body's end

    with LoopbackUpstream(script) as upstream_url, gateway(anthropic_base_url=upstream_url) as base_url:
        response = post(base_url)
    assert message_frames(response.content) == [chunk("Hel"), chunk("lo"), chunk("", "error")]
    error = error_frame(response.content)["error"]
    assert error["type"] == "upstream_error" and "connection failed mid-stream" in error["message"]


def test_stalled_stream_is_upstream_timeout() -> None:
    async def script(writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD)
        await send_events(writer, message_start(), text_delta("Hi"))
        await asyncio.sleep(30)

    with (
        LoopbackUpstream(script) as upstream_url,
        gateway(anthropic_base_url=upstream_url, upstream_timeout_s=0.3) as base_url,
    ):
        started = time.monotonic()
        response = post(base_url)
        elapsed = time.monotonic() - started
    assert message_frames(response.content) == [chunk("Hi"), chunk("", "error")]
    assert error_frame(response.content)["error"]["type"] == "upstream_timeout"
    assert 0.3 <= elapsed < 2


def test_upstream_silent_before_its_status_is_504() -> None:
    async def script(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    with (
        LoopbackUpstream(script) as upstream_url,
        gateway(anthropic_base_url=upstream_url, upstream_timeout_s=0.3, upstream_max_retries=1) as base_url,
    ):
        response = post(base_url)
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "upstream_timeout"
    assert len(response.json()["error"]["message"]) > 0


def test_client_disconnect_closes_the_upstream_connection() -> None:
    async def script(writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD)
        await send_events(writer, message_start(), BLOCK_START)
        while True:  # tokens forever, until the gateway hangs up
            await send_events(writer, text_delta("token "))
            await asyncio.sleep(0.02)

    upstream = LoopbackUpstream(script)
    with upstream as upstream_url, gateway(anthropic_base_url=upstream_url) as base_url:
        host, port = base_url.removeprefix("http://").split(":")
        body = json.dumps(HELLO).encode()
        with socket.create_connection((host, int(port)), timeout=5) as client:
            client.sendall(
                b"POST /api/v1/chat/stream HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%b" % (len(body), body)
            )
            received = b""
            while received.count(b"event: message") < 3:
                received += client.recv(65536)
        left_at = time.monotonic()
        deadline = left_at + 2
        while not upstream.closed_at and time.monotonic() < deadline:
            time.sleep(0.01)
    assert b"HTTP/1.1 200 OK" in received and b'"content":"token "' in received
    assert upstream.closed_at, "the upstream connection was never closed"
    assert upstream.closed_at[0] - left_at < 1.0
