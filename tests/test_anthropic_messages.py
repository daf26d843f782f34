"""`/v1/messages` (`dialects/anthropic_messages.py`) with the official `anthropic` SDK as the
client, against one loopback upstream sending each provider's real bytes (`wire_*.py`):
the passthrough to `anthropic` (what the upstream received is what the client sent; what
the client got is what the upstream sent), the translation to every other provider both
ways, thinking signatures over two turns, a tool loop, `count_tokens`, `/v1/models` in
Anthropic's shape, errors before and after the first event."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from streamgate import sse
from streamgate.app import create_app
from streamgate.chat_types import FinishReason, ReasoningChunk, SignatureChunk, StreamChunk, ToolCallChunk, Usage
from streamgate.dialects.anthropic_messages import MessagesFrames
from support import serve, settings
from wire_anthropic import (
    PING,
    SIGNATURE,
    error_body,
    error_event,
    message_start,
    redacted_thinking_block,
    sdk_message,
    text_block,
    thinking_block,
    tool_block,
    whole_message,
    whole_stream,
)
from wire_gemini import frame, function_call, sdk_stream, text, thought, usage_metadata
from wire_gemini import sse_body as gemini_body
from wire_openai import call_arguments, call_start, chunk, completion, sse_body, tool_chunk, usage_chunk
from wire_upstreams import ProviderUpstream, providers_gateway, text_stream

TOOLS = [
    {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[str, ProviderUpstream]]:
    with providers_gateway() as running:
        yield running


def client(url: str, **options: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="sk-gateway-client", max_retries=0, **options)


def events(raw: bytes) -> list[tuple[str, Any]]:
    return [(e.event, json.loads(e.data)) for e in sse.Decoder().feed(raw) if isinstance(e, sse.Event)]


# --- passthrough ---------------------------------------------------------------------------


def claude_code_like_request() -> dict[str, Any]:
    """What Claude Code sends (`test_claude_code.py` records it): fields the gateway does
    not know among them."""
    return {
        "model": "claude-opus-5-5",
        "max_tokens": 32000,
        "stream": True,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1"},
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral", "scope": "global"}},
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Say hi", "cache_control": {"type": "ephemeral"}}]},
            {
                "role": "system",
                "content": [{"type": "text", "text": "# Environment"}],
                "output_config": {"effort": "medium"},
            },
        ],
        "tools": [{**TOOLS[0], "defer_loading": True}],
        "metadata": {"user_id": json.dumps({"device_id": "770bb696", "session_id": "a36e71de"})},
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "medium"},
        "some_future_field": {"nested": [1, 2.5, None, "é"]},
    }


def test_passthrough_sends_the_body_and_headers_as_sent_and_returns_the_events_as_sent(gateway) -> None:
    url, upstream = gateway
    reads = whole_stream(
        thinking_block(0, ["Let me think", " about it."]),
        redacted_thinking_block(1),
        [PING],
        text_block(2, ["Hi", " there é"]),
        thinking_tokens=12,
    )
    upstream.script(b"".join(reads))
    body = json.dumps(claude_code_like_request()).encode()
    headers = {
        "anthropic-version": "2026-10-21",
        "anthropic-beta": "claude-code-20250219,effort-2025-11-24",
        "anthropic-dangerous-direct-browser-access": "true",
        "x-api-key": "sk-gateway-client",
        "content-type": "application/json",
        "x-claude-code-session-id": "s-1",
    }
    answer = httpx.post(url + "/v1/messages?beta=true", content=body, headers=headers, timeout=10)
    assert answer.status_code == 200
    sent = upstream.seen[0]
    assert sent.path == "/v1/messages?beta=true"
    assert sent.body == body  # byte for byte: nothing to rename
    assert sent.headers["anthropic-version"] == "2026-10-21"
    assert sent.headers["anthropic-beta"] == "claude-code-20250219,effort-2025-11-24"
    assert sent.headers["anthropic-dangerous-direct-browser-access"] == "true"
    assert sent.headers["authorization"] == "Bearer sk-ant-e2e"  # the gateway's own key, never the client's
    assert "x-api-key" not in sent.headers
    assert "sk-gateway-client" not in (json.dumps(sent.headers) + sent.body.decode())
    assert events(answer.content) == events(b"".join(reads))


def test_passthrough_with_the_sdk_stream_and_create(gateway) -> None:
    url, upstream = gateway
    reads = whole_stream(
        thinking_block(0, ["Hmm."]),
        text_block(1, ["Hello", "!"]),
        tool_block(2, "toolu_01A", "get_weather", ["", '{"city": ', '"Paris"}']),
        stop_reason="tool_use",
    )
    upstream.script(b"".join(reads))
    with client(url).messages.stream(
        model="claude-sonnet-5-5",
        max_tokens=1024,
        tools=TOOLS,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.model_dump() == sdk_message(reads).model_dump()
    sdk_version = anthropic.Anthropic(api_key="-").default_headers["anthropic-version"]
    assert upstream.seen[0].headers["anthropic-version"] == sdk_version  # the SDK's, forwarded

    content = [{"type": "text", "text": "Hello!", "citations": None}]
    upstream.script(whole_message(content, cache_read_input_tokens=7))
    message = client(url).messages.create(
        model="claude-sonnet-5-5", max_tokens=1024, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.model_dump(exclude_none=True) == anthropic.types.Message.model_validate(
        json.loads(whole_message(content, cache_read_input_tokens=7))
    ).model_dump(exclude_none=True)
    assert "stream" not in upstream.seen[0].json


def test_passthrough_renames_only_the_model(gateway) -> None:
    url, upstream = gateway
    upstream.script(b"".join(whole_stream(text_block(0, ["ok"]))))
    request = claude_code_like_request()
    answer = httpx.post(url + "/v1/messages", json={**request, "model": "anthropic/claude-haiku-5-5"}, timeout=10)
    assert sdk_message([answer.content]).content[0].text == "ok"
    sent = upstream.seen[0].json
    assert sent == {**request, "model": "claude-haiku-5-5"}
    assert list(sent) == list(request)  # the fields in the order sent


def test_passthrough_thinking_round_trip_keeps_the_signature(gateway) -> None:
    url, upstream = gateway
    upstream.script(b"".join(whole_stream(thinking_block(0, ["2+2 is 4."]), text_block(1, ["4"]))))
    sdk = client(url)
    question = {"role": "user", "content": "2+2?"}
    with sdk.messages.stream(
        model="claude-sonnet-5-5",
        max_tokens=2048,
        messages=[question],
        thinking={"type": "enabled", "budget_tokens": 1024},
    ) as stream:
        first = stream.get_final_message()
    assert first.content[0].signature == SIGNATURE
    upstream.script(b"".join(whole_stream(text_block(0, ["8"]))))
    turns = [question, {"role": "assistant", "content": first.content}, {"role": "user", "content": "Double it"}]
    with sdk.messages.stream(
        model="claude-sonnet-5-5", max_tokens=2048, messages=turns, thinking={"type": "enabled", "budget_tokens": 1024}
    ) as stream:
        assert stream.get_final_text() == "8"
    thinking = upstream.seen[0].json["messages"][1]["content"][0]
    assert (thinking["type"], thinking["thinking"], thinking["signature"]) == ("thinking", "2+2 is 4.", SIGNATURE)


def test_passthrough_errors_come_as_anthropic_sent_them(gateway) -> None:
    url, upstream = gateway
    overloaded = error_body("overloaded_error", "Overloaded")
    upstream.script((529, overloaded))
    with pytest.raises(anthropic.APIStatusError) as caught:
        client(url).messages.create(
            model="claude-sonnet-5-5", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
        )
    assert caught.value.status_code == 529
    assert caught.value.body == json.loads(overloaded)

    upstream.script(
        b"".join([message_start(), *text_block(0, ["Par"])[:2], error_event("overloaded_error", "Overloaded")])
    )
    answer = httpx.post(
        url + "/v1/messages",
        json={
            "model": "claude-sonnet-5-5",
            "max_tokens": 10,
            "stream": True,
            "messages": [{"role": "user", "content": "Hi"}],
        },
        timeout=10,
    )
    got = events(answer.content)
    assert [name for name, _ in got] == ["message_start", "content_block_start", "content_block_delta", "error"]
    assert got[-1][1] == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def test_passthrough_count_tokens(gateway) -> None:
    url, upstream = gateway
    upstream.script(b'{"input_tokens": 2095}')
    count = client(url).messages.count_tokens(
        model="claude-sonnet-5-5", messages=[{"role": "user", "content": "Hi"}], tools=TOOLS
    )
    assert count.input_tokens == 2095
    assert upstream.seen[0].path == "/v1/messages/count_tokens"
    assert upstream.seen[0].json["tools"] == TOOLS


# --- translation ---------------------------------------------------------------------------

TRANSLATED = {
    "openai": "openai/gpt-5.5",
    "gemini": "gemini/gemini-2.5-flash",
    "llama4": "llama4/meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8",
    "echo": "echo/echo",
}


@pytest.mark.parametrize("provider", list(TRANSLATED))
def test_translation_with_stream_and_create(gateway, provider: str) -> None:
    url, upstream = gateway
    sdk = client(url)
    request = {
        "model": TRANSLATED[provider],
        "max_tokens": 300,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}],
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u1"},
        "extra_body": {"temperature": 0.2},
    }
    pieces = ["Hello", " wor", "ld é"] if provider != "echo" else None
    if pieces:
        upstream.script(text_stream(provider, pieces), text_stream(provider, pieces))
    names = []
    with sdk.messages.stream(**request) as stream:
        for event in stream:
            names.append(event.type)
        streamed = stream.get_final_message()
    message = sdk.messages.create(**request)
    expected = "".join(pieces) if pieces else "Say hello"
    for answer in (streamed, message):
        assert [block.type for block in answer.content] == ["text"]
        assert answer.content[0].text == expected
        assert answer.stop_reason == "end_turn"
        assert answer.model == TRANSLATED[provider]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert names.count("content_block_start") == names.count("content_block_stop") == 1
    if pieces:
        assert (streamed.usage.input_tokens, streamed.usage.output_tokens) == (9, 12)
        sent = upstream.seen[0].json
        if provider in ("openai", "llama4"):
            assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
            assert sent["stop"] == ["END"] and sent["temperature"] == 0.2
            assert "metadata" not in sent
        else:
            assert sent["systemInstruction"]["parts"] == [{"text": "Be brief."}]
            assert sent["generationConfig"]["stopSequences"] == ["END"]


def test_translated_tool_loop_to_openai(gateway) -> None:
    url, upstream = gateway
    sdk = client(url)
    calls = sse_body(
        [
            tool_chunk(call_start(0, "call_abc", "get_weather"), first=True),
            tool_chunk(call_arguments(0, '{"city":')),
            tool_chunk(call_arguments(0, ' "Paris"}')),
            chunk(finish_reason="tool_calls"),
            usage_chunk(20, 8),
        ]
    )
    upstream.script(calls, completion(["Sunny in Paris."]))
    turns: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
    with sdk.messages.stream(
        model="openai/gpt-4o", max_tokens=200, tools=TOOLS, messages=turns, tool_choice={"type": "any"}
    ) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    call = first.content[0]
    assert (call.type, call.id, call.name, call.input) == ("tool_use", "call_abc", "get_weather", {"city": "Paris"})
    assert upstream.seen[0].json["tool_choice"] == "required"
    assert upstream.seen[0].json["tools"][0]["function"]["parameters"] == TOOLS[0]["input_schema"]
    turns += [
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_abc", "content": "Sunny"},
                {"type": "text", "text": "And so?"},
            ],
        },
    ]
    with sdk.messages.stream(model="openai/gpt-4o", max_tokens=200, tools=TOOLS, messages=turns) as stream:
        assert stream.get_final_text() == "Sunny in Paris."
    sent = upstream.seen[1].json["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "call_abc"
    assert sent[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert sent[2] == {"role": "tool", "content": "Sunny", "tool_call_id": "call_abc"}
    assert sent[3] == {"role": "user", "content": "And so?"}


GEMINI_SIGNATURE = "KCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZX"


def test_gemini_thinking_round_trip_with_the_thought_signature(gateway) -> None:
    url, upstream = gateway
    sdk = client(url)
    body = gemini_body(
        frame(thought("Two and two")),
        frame(thought(" make four.")),
        frame(text("It is 4.")),
        frame({"text": "", "thoughtSignature": GEMINI_SIGNATURE}, finish_reason="STOP", usage=usage_metadata(9, 4, 20)),
    )
    assert [r.candidates[0].content.parts[0].thought_signature for r in sdk_stream(body)][-1]  # Gemini's wire
    upstream.script(body, gemini_body(frame(text("8"), finish_reason="STOP")))
    question = {"role": "user", "content": "2+2?"}
    with sdk.messages.stream(
        model="gemini/gemini-2.5-flash", max_tokens=500, messages=[question], thinking={"type": "adaptive"}
    ) as stream:
        first = stream.get_final_message()
    kinds = [
        (block.type, getattr(block, "thinking", None), getattr(block, "signature", None)) for block in first.content
    ]
    assert kinds == [
        ("thinking", "Two and two make four.", ""),
        ("text", None, None),
        ("thinking", "", GEMINI_SIGNATURE),
    ]
    assert first.usage.output_tokens_details.thinking_tokens == 20
    turns = [question, {"role": "assistant", "content": first.content}, {"role": "user", "content": "Double it"}]
    with sdk.messages.stream(model="gemini/gemini-2.5-flash", max_tokens=500, messages=turns) as stream:
        assert stream.get_final_text() == "8"
    model_turn = upstream.seen[1].json["contents"][1]
    assert model_turn == {"role": "model", "parts": [{"text": "It is 4.", "thoughtSignature": GEMINI_SIGNATURE}]}


def test_gemini_function_call_signature_round_trips_in_the_call_id(gateway) -> None:
    url, upstream = gateway
    sdk = client(url)
    upstream.script(
        gemini_body(frame(function_call("get_weather", {"city": "Paris"}, GEMINI_SIGNATURE), finish_reason="STOP")),
        gemini_body(frame(text("Sunny."), finish_reason="STOP")),
    )
    turns: list[dict[str, Any]] = [{"role": "user", "content": "Weather?"}]
    first = sdk.messages.create(model="gemini/gemini-3.8-flash", max_tokens=100, tools=TOOLS, messages=turns)
    call = first.content[0]
    assert (first.stop_reason, call.type, call.input) == ("tool_use", "tool_use", {"city": "Paris"})
    turns += [
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny"}]},
    ]
    assert (
        sdk.messages.create(model="gemini/gemini-3.8-flash", max_tokens=100, tools=TOOLS, messages=turns)
        .content[0]
        .text
        == "Sunny."
    )
    part = upstream.seen[1].json["contents"][1]["parts"][0]
    assert part == {
        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
        "thoughtSignature": GEMINI_SIGNATURE,
    }


def test_thinking_a_target_cannot_take_back_is_dropped(gateway) -> None:
    url, upstream = gateway
    upstream.script(completion(["fine"]))
    turns = [
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hm", "signature": SIGNATURE},
                {"type": "redacted_thinking", "data": "EmwKAhgB"},
                {"type": "text", "text": "Hello"},
            ],
        },
        {"role": "user", "content": "How are you?"},
    ]
    assert client(url).messages.create(model="openai/gpt-4o", max_tokens=50, messages=turns).content[0].text == "fine"
    assert upstream.seen[0].json["messages"][1] == {"role": "assistant", "content": "Hello"}


def test_images_and_structured_output_to_gemini(gateway) -> None:
    url, upstream = gateway
    upstream.script(gemini_body(frame(text('{"n": 1}'), finish_reason="STOP")))
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
    client(url).messages.create(
        model="gemini/gemini-2.5-flash",
        max_tokens=50,
        output_config={"format": {"type": "json_schema", "schema": schema}},
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                    {"type": "text", "text": "Count"},
                ],
            }
        ],
    )
    sent = upstream.seen[0].json
    assert sent["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/png", "data": png}},
        {"fileData": {"fileUri": "https://example.com/cat.jpg", "mimeType": "image/jpeg"}},
        {"text": "Count"},
    ]
    assert sent["generationConfig"]["responseJsonSchema"] == schema


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("top_k", 5, "$.top_k"),
        ("tools", [{"type": "web_search_20250305", "name": "web_search"}], "$.tools[0]"),
        (
            "messages",
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}
                    ],
                }
            ],
            "$.messages[0].content[0].type",
        ),
    ],
)
def test_a_field_the_target_cannot_honour_is_a_400_naming_it(gateway, field: str, value: Any, path: str) -> None:
    url, _ = gateway
    request = {
        "model": "openai/gpt-4o",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "Hi"}],
        "extra_body": {field: value},
    }
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(url).messages.create(**request)
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert caught.value.body["error"]["message"].startswith(path)


def test_errors_before_and_after_the_first_event(gateway) -> None:
    url, upstream = gateway
    sdk = client(url)
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk.messages.create(model="nowhere/x", max_tokens=10, messages=[{"role": "user", "content": "Hi"}])
    assert refused.value.body["type"] == "error"
    assert "neither a provider nor a route" in refused.value.body["error"]["message"]

    upstream.script((429, json.dumps({"error": {"message": "Rate limit reached", "type": "requests"}}).encode()))
    with pytest.raises(anthropic.RateLimitError) as limited:
        sdk.messages.create(model="openai/gpt-4o", max_tokens=10, messages=[{"role": "user", "content": "Hi"}])
    assert limited.value.body["error"]["type"] == "rate_limit_error"

    upstream.script(sse_body([chunk(role="assistant"), chunk("Partial")], done=False))
    with pytest.raises(anthropic.APIStatusError) as broken:
        with sdk.messages.stream(
            model="openai/gpt-4o", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
        ) as stream:
            for _ in stream:
                pass
    assert broken.value.body["error"]["type"] == "api_error"


def test_count_tokens_gemini_and_estimate(gateway) -> None:
    url, upstream = gateway
    upstream.script(b'{"totalTokens": 31, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 31}]}')
    sdk = client(url)
    assert (
        sdk.messages.count_tokens(
            model="gemini/gemini-2.5-flash", system="Be brief.", messages=[{"role": "user", "content": "Hi"}]
        ).input_tokens
        == 31
    )
    sent = upstream.seen[0]
    assert sent.path.endswith("/models/gemini-2.5-flash:countTokens")
    assert sent.json["generateContentRequest"]["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    estimate = sdk.messages.count_tokens(model="openai/gpt-4o", messages=[{"role": "user", "content": "a" * 400}])
    assert estimate.input_tokens == 100 + 4


def test_models_in_anthropic_shape_with_anthropic_version(gateway) -> None:
    url, _ = gateway
    page = client(url).models.list(limit=2)
    assert [model.type for model in page.data] == ["model", "model"]
    assert page.data[0].id == "claude-sonnet-5-5" and page.has_more
    everything = httpx.get(url + "/v1/models?limit=1000", headers={"anthropic-version": "2023-06-01"}).json()
    assert {"echo/echo", "claude-opus-5-5", "openai/gpt-4o"} <= {card["id"] for card in everything["data"]}
    assert everything["first_id"] == "claude-sonnet-5-5" and not everything["has_more"]
    assert client(url).models.retrieve("echo/echo").display_name == "echo"
    assert httpx.get(url + "/v1/models").json()["object"] == "list"  # OpenAI's shape without the header
    with pytest.raises(anthropic.NotFoundError):
        client(url).models.retrieve("nope")


def test_the_request_log_names_the_session(gateway, caplog: pytest.LogCaptureFixture) -> None:
    url, _ = gateway
    caplog.set_level(logging.INFO, logger="streamgate.access")
    client(url, default_headers={"X-Claude-Code-Session-Id": "a36e71de-c006"}).messages.create(
        model="echo/echo", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
    )
    deadline = time.monotonic() + 10  # the line is written once the answer has gone out
    while not (lines := [r.getMessage() for r in caplog.records if "/v1/messages" in r.getMessage()]):
        assert time.monotonic() < deadline, "no request log line"
        time.sleep(0.01)
    line = lines[0]
    assert "provider=echo" in line and line.endswith("session=a36e71de-c006")


def test_a_resumable_stream_resumes_after_its_last_event(gateway) -> None:
    url, _ = gateway
    body = {
        "model": "echo/echo",
        "max_tokens": 10,
        "stream": True,
        "resumable": True,
        "messages": [{"role": "user", "content": "one two three"}],
    }
    first = httpx.post(url + "/v1/messages", json=body, timeout=10)
    stream_id = first.headers["x-stream-id"]
    resumed = httpx.get(f"{url}/v1/messages/{stream_id}/stream", headers={"last-event-id": "3"}, timeout=10)
    whole = [e for e in sse.Decoder().feed(first.content) if isinstance(e, sse.Event)]
    assert [e.id for e in whole] == [str(n) for n in range(1, len(whole) + 1)]
    assert [(e.event, e.data) for e in sse.Decoder().feed(resumed.content) if isinstance(e, sse.Event)] == [
        (e.event, e.data) for e in whole[3:]
    ]
    assert whole[-1].event == "message_stop"


def test_stream_false_translated_with_thinking_and_tools_from_echo(gateway) -> None:
    url, _ = gateway
    message = client(url).messages.create(
        model="echo/echo",
        max_tokens=100,
        tools=TOOLS,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=[{"role": "user", "content": 'Checking.\n/tool get_weather {"city": "Oslo"}'}],
    )
    assert [block.type for block in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[2].input == {"city": "Oslo"}
    assert message.stop_reason == "tool_use"


def test_the_readme_anthropic_sdk_example_runs() -> None:
    """The README's "Claude Code and the Anthropic SDK" Python example, as written (echo only)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.partition("\n## Claude Code and the Anthropic SDK\n")[2].partition("\n## ")[0]
    (example,) = re.findall(r"^```python\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    printed = io.StringIO()
    with serve(create_app(settings())) as url, contextlib.redirect_stdout(printed):
        exec(compile(example.replace("http://127.0.0.1:8000", url), "README.md", "exec"), {})
    assert printed.getvalue() == "Hello there, streaming world\n4 tokens\nHi\n5\n['echo/echo']\n"


def test_tool_search_results_are_translated_as_text(gateway) -> None:
    url, upstream = gateway
    upstream.script(completion(["done"]))
    turns = [
        {"role": "user", "content": "Load the weather tool"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "ToolSearch", "input": {"query": "select:get_weather"}}
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "tool_reference", "tool_name": "get_weather"}],
                }
            ],
        },
    ]
    tools = [*TOOLS, {"name": "ToolSearch", "input_schema": {"type": "object"}}]
    client(url).messages.create(model="openai/gpt-4o", max_tokens=50, tools=tools, messages=turns)
    assert upstream.seen[0].json["messages"][2] == {
        "role": "tool",
        "content": "Tool loaded: get_weather",
        "tool_call_id": "toolu_1",
    }


def test_frames_open_and_close_every_block_as_the_sdk_accumulates_them() -> None:
    """`MessagesFrames` alone, fed every chunk kind in an awkward order (reasoning after
    text, a signature with no thinking open, a call's fragments after the next call began,
    a call without arguments): the SDK validates each event and accumulates the message."""
    frames = MessagesFrames("msg_1", "gemini/gemini-2.5-flash", 12)
    chunks = [
        ReasoningChunk("Think", "m", "p"),
        ReasoningChunk("ing.", "m", "p"),
        SignatureChunk("c2ln"),
        StreamChunk("Hel", None, "m", "p"),
        StreamChunk("lo", None, "m", "p"),
        ReasoningChunk("More.", "m", "p"),
        ToolCallChunk(0, "call_a", "get_weather", ""),
        ToolCallChunk(0, arguments='{"city"'),
        ToolCallChunk(1, "call_b", "get_time", '{"tz": "UTC"}'),
        ToolCallChunk(0, arguments=': "Oslo"}'),
        ToolCallChunk(2, "call_c", "noop", ""),
        SignatureChunk("c2lnMg=="),
    ]
    kinds = {
        ReasoningChunk: frames.reasoning,
        SignatureChunk: frames.signature,
        StreamChunk: frames.content,
        ToolCallChunk: frames.tool_call,
    }
    body = [kinds[type(chunk)](chunk) for chunk in chunks]  # type: ignore[operator]
    usage = Usage(30, 9, 39, 4, cached_tokens=10)
    body.append(frames.final(StreamChunk("", FinishReason.TOOL_CALLS, "m", "p", usage)))
    message = sdk_message(body)
    assert [
        (block.type, getattr(block, "text", None) or getattr(block, "thinking", None) or getattr(block, "input", None))
        for block in message.content
    ] == [
        ("thinking", "Thinking."),
        ("text", "Hello"),
        ("thinking", "More."),
        ("tool_use", {"city": "Oslo"}),
        ("tool_use", {"tz": "UTC"}),
        ("tool_use", {}),
        ("thinking", None),
    ]
    assert [getattr(block, "signature", None) for block in message.content][::6] == ["c2ln", "c2lnMg=="]
    assert message.stop_reason == "tool_use"
    counts = message.usage
    assert (counts.input_tokens, counts.cache_read_input_tokens, counts.output_tokens) == (20, 10, 9)
    assert counts.output_tokens_details.thinking_tokens == 4
    events = [e.event for e in sse.Decoder().feed(b"".join(body)) if isinstance(e, sse.Event)]
    assert events.count("content_block_start") == events.count("content_block_stop") == 7
    assert events[0] == "message_start" and events[-2:] == ["message_delta", "message_stop"]
