"""`/v1/responses` translated to every non-openai provider, driven by the official `openai`
SDK (`responses.stream`, `create`, `retrieve`, `delete`) against the app on a real loopback
server, with each provider's real bytes from a scripted upstream (`wire_upstreams`).

Every event a test reads is also validated against the SDK's own `ResponseStreamEvent`
types, and checked to carry `event:` = its `type` and the next `sequence_number`."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pydantic
import pytest
from openai.types.responses import ResponseStreamEvent
from processes import running_redis
from streamgate import sse
from streamgate.app import create_app
from streamgate.chat_types import FinishReason, ReasoningChunk, SignatureChunk, StreamChunk, ToolCallChunk, Usage
from streamgate.dialects.openai_responses import ResponsesDialect
from streamgate.dialects.responses_events import ResponsesFrames
from streamgate.dialects.responses_input import ResponsesRequest, flat_name
from streamgate.providers.echo import EchoAdapter
from support import BrokenAdapter, serve, settings
from wire_anthropic import (
    MESSAGE_STOP,
    SIGNATURE,
    message_delta,
    message_start,
    text_block,
    thinking_block,
    tool_block,
    whole_stream,
)
from wire_gemini import frame, function_call, text, thought, usage_metadata
from wire_gemini import sse_body as gemini_body
from wire_upstreams import ProviderUpstream, providers_gateway, text_stream

_events = pydantic.TypeAdapter(ResponseStreamEvent)

TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def read_events(raw: bytes, first_sequence: int = 0) -> list[dict[str, Any]]:
    """The events of an SSE body, each checked: `event:` names its `type`, sequence numbers
    follow one another, and the SDK's own types accept it."""
    events = [e for e in sse.Decoder().feed(raw) if isinstance(e, sse.Event)]
    datas = [json.loads(e.data) for e in events]
    for number, (event, data) in enumerate(zip(events, datas, strict=True)):
        assert event.event == data["type"]
        assert data["sequence_number"] == first_sequence + number
        _events.validate_python(data)
    return datas


def base() -> dict[str, Any]:
    """The echoed fields of a response to a minimal request."""
    return ResponsesDialect.base(ResponsesRequest(model="m"), True)


def post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url + "/v1/responses", json=body, timeout=20)


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[str, ProviderUpstream]]:
    with providers_gateway() as running:
        yield running


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    adapters = {"echo": EchoAdapter(0), "broken": BrokenAdapter()}
    with serve(create_app(settings(), adapters)) as url:
        yield url


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="sk-anything", max_retries=0)


# --- the event sequence, per provider ---------------------------------------------------


@pytest.mark.parametrize(
    "provider,model",
    [
        ("anthropic", "claude-sonnet-5-5"),
        ("gemini", "gemini-2.5-flash"),
        ("llama4", "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8"),
    ],
)
def test_event_sequence_per_provider(gateway: tuple[str, ProviderUpstream], provider: str, model: str) -> None:
    url, upstream = gateway
    upstream.script(text_stream(provider, ["Hé", "llo ", "wörld 🌍"], usage=(9, 12)))
    response = post(url, {"model": f"{provider}/{model}", "input": "Hi", "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = read_events(response.content)

    assert [e["type"] for e in events] == TEXT_EVENTS
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "Héllo wörld 🌍"
    completed = events[-1]["response"]
    assert completed["status"] == "completed" and completed["model"] == f"{provider}/{model}"
    assert completed["id"] == events[0]["response"]["id"]
    [message] = completed["output"]
    assert message["content"][0]["text"] == "Héllo wörld 🌍" and message["id"] == events[2]["item"]["id"]
    assert completed["usage"]["input_tokens"] == 9 and completed["usage"]["output_tokens"] == 12


def test_sdk_stream_and_create_to_echo(echo_url: str) -> None:
    client = sdk(echo_url)
    with client.responses.stream(model="echo/echo", input="Héllo there, wörld", instructions="Be brief.") as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert final.output_text == "Héllo there, wörld"
    assert final.instructions == "Be brief." and final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens == 3

    answer = client.responses.create(
        model="echo/echo", input=[{"role": "user", "content": [{"type": "input_text", "text": "one two"}]}]
    )
    assert answer.object == "response" and answer.output_text == "one two"
    assert client.responses.retrieve(answer.id).output_text == "one two"


def test_cached_and_reasoning_tokens(gateway: tuple[str, ProviderUpstream]) -> None:
    url, upstream = gateway
    reads = [
        message_start(4, cache_read_input_tokens=20),
        *text_block(0, ["ok"]),
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
        b'"stop_sequence":null},"usage":{"output_tokens":30,"output_tokens_details":{"thinking_tokens":25}}}\n\n',
        MESSAGE_STOP,
    ]
    upstream.script(b"".join(reads))
    usage = sdk(url).responses.create(model="anthropic/claude-sonnet-5-5", input="Hi").usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (24, 30, 54)
    assert usage.output_tokens_details.reasoning_tokens == 25


# --- reasoning --------------------------------------------------------------------------


def test_reasoning_summary_from_anthropic_thinking(gateway: tuple[str, ProviderUpstream]) -> None:
    url, upstream = gateway
    upstream.script(
        b"".join(whole_stream(thinking_block(0, ["Let me ", "think."]), text_block(1, ["Four."]), thinking_tokens=12))
    )
    response = post(
        url,
        {
            "model": "anthropic/claude-sonnet-5-5",
            "input": "2+2?",
            "stream": True,
            "reasoning": {"effort": "high", "summary": "auto"},
        },
    )
    events = read_events(response.content)
    assert [e["type"] for e in events][2:9] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
    ]
    reasoning, message = events[-1]["response"]["output"]
    assert reasoning["type"] == "reasoning" and reasoning["summary"] == [
        {"type": "summary_text", "text": "Let me think."}
    ]
    assert message["content"][0]["text"] == "Four."
    sent = upstream.seen[0].json
    assert sent["thinking"]["type"] == "adaptive" and sent["output_config"]["effort"] == "high"


def test_claude_thinking_signature_round_trips_through_the_store(gateway: tuple[str, ProviderUpstream]) -> None:
    """Claude's signed thinking: its signature in `encrypted_content`, kept in the store, and
    on the next turn (`previous_response_id`) back to Claude as the signed thinking block."""
    url, upstream = gateway
    upstream.script(
        b"".join(
            whole_stream(
                thinking_block(0, ["Hmm."]),
                tool_block(1, "toolu_1", "get_weather", ['{"city": "Oslo"}']),
                stop_reason="tool_use",
            )
        ),
        text_stream("anthropic", ["Done."]),
    )
    client = sdk(url)
    first = client.responses.create(
        model="anthropic/claude-sonnet-4-5",
        input="go",
        tools=[WEATHER],  # type: ignore[list-item]
        reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"],
    )
    reasoning = first.output[0]
    if reasoning.type != "reasoning" or reasoning.encrypted_content is None:
        pytest.skip("the anthropic adapter reports no thinking signatures (SignatureChunk) yet")
    assert reasoning.encrypted_content == SIGNATURE
    client.responses.create(
        model="anthropic/claude-sonnet-4-5",
        previous_response_id=first.id,
        tools=[WEATHER],
        reasoning={"effort": "low", "summary": "auto"},  # type: ignore[list-item]
        input=[{"type": "function_call_output", "call_id": "toolu_1", "output": "sunny"}],
    )
    assistant = upstream.seen[1].json["messages"][1]
    assert assistant["content"][0] == {"type": "thinking", "thinking": "Hmm.", "signature": SIGNATURE}


def test_echo_reasoning_item_sent_back_by_id(echo_url: str) -> None:
    """A reasoning item sent back by id alone (the Agents SDK) is read from the store."""
    client = sdk(echo_url)
    first = client.responses.create(model="echo/echo", input="hello", reasoning={"effort": "low", "summary": "auto"})
    reasoning, message = first.output
    assert reasoning.type == "reasoning" and reasoning.summary[0].text.startswith("I am echo")
    again = client.responses.create(
        model="echo/echo",
        store=False,
        input=[
            {"role": "user", "content": "hello"},
            {"type": "reasoning", "id": reasoning.id, "summary": []},
            {"id": message.id},  # an item_reference, its `type` left out
            {"role": "user", "content": "and again"},
        ],
    )
    assert again.output_text == "and again"


def test_signature_round_trips_in_encrypted_content() -> None:
    """The provider's signature comes back in `encrypted_content` when `include` asks,
    and is kept for the next turn either way."""
    frames = ResponsesFrames(base(), True, {})
    out = frames.reasoning(ReasoningChunk("hm", "m", "p")) + frames.signature(SignatureChunk(SIGNATURE))
    out += frames.content(StreamChunk("ok", None, "m", "p"))
    out += frames.final(StreamChunk("", FinishReason.STOP, "m", "p", Usage.of(1, 2)))
    done = [e for e in read_events(out) if e["type"] == "response.output_item.done"]
    assert done[0]["item"]["encrypted_content"] == SIGNATURE
    hidden = ResponsesFrames(base(), False, {})
    hidden_out = hidden.signature(SignatureChunk(SIGNATURE))
    hidden_out += hidden.final(StreamChunk("", FinishReason.STOP, "m", "p"))
    [item] = [e["item"] for e in read_events(hidden_out) if e["type"] == "response.output_item.done"]
    assert "encrypted_content" not in item and hidden.items[0]["encrypted_content"] == SIGNATURE


# --- tools ------------------------------------------------------------------------------

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather of a city",
    "strict": False,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def test_two_turn_tool_loop_with_anthropic(gateway: tuple[str, ProviderUpstream]) -> None:
    url, upstream = gateway
    client = sdk(url)
    upstream.script(
        b"".join(
            whole_stream(
                text_block(0, ["Checking."]),
                tool_block(1, "toolu_01", "get_weather", ["", '{"city":', ' "Paris"}']),
                stop_reason="tool_use",
            )
        ),
        b"".join(whole_stream(text_block(0, ["Sunny in Paris."]))),
    )
    tools: Any = [WEATHER, {"type": "web_search"}]
    with client.responses.stream(model="anthropic/claude-sonnet-5-5", input="Weather in Paris?", tools=tools) as s:
        types = [event.type for event in s]
        first = s.get_final_response()
    assert "response.function_call_arguments.delta" in types and "response.function_call_arguments.done" in types
    message, call = first.output
    assert message.type == "message" and message.content[0].text == "Checking."  # type: ignore[union-attr]
    assert call.type == "function_call" and call.call_id == "toolu_01" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert [t["name"] for t in upstream.seen[0].json["tools"]] == ["get_weather"]  # web_search left out

    second = client.responses.create(
        model="anthropic/claude-sonnet-5-5",
        previous_response_id=first.id,
        tools=tools,
        input=[{"type": "function_call_output", "call_id": "toolu_01", "output": "sunny"}],
    )
    assert second.output_text == "Sunny in Paris." and second.previous_response_id == first.id
    turns = upstream.seen[1].json["messages"]
    assert turns[0] == {"role": "user", "content": "Weather in Paris?"}
    assert turns[1]["role"] == "assistant"
    assert [b["type"] for b in turns[1]["content"]] == ["text", "tool_use"]
    assert turns[1]["content"][1]["input"] == {"city": "Paris"}
    assert turns[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny"}],
    }


def test_namespace_tools_come_back_under_their_namespace(gateway: tuple[str, ProviderUpstream]) -> None:
    url, upstream = gateway
    flat = flat_name("multi_agent_v1", "spawn_agent")
    upstream.script(
        gemini_body(
            frame(function_call(flat, {"task": "x"})),
            frame(text(""), finish_reason="STOP", usage=usage_metadata(5, 3, None)),
        )
    )
    namespace = {
        "type": "namespace",
        "name": "multi_agent_v1",
        "description": "Agents",
        "tools": [
            {
                "type": "function",
                "name": "spawn_agent",
                "parameters": {"type": "object", "properties": {"task": {"type": "string"}}},
            }
        ],
    }
    answer = sdk(url).responses.create(model="gemini/gemini-2.5-flash", input="go", tools=[namespace])  # type: ignore[list-item]
    [call] = answer.output
    assert call.type == "function_call" and (call.namespace, call.name) == ("multi_agent_v1", "spawn_agent")
    declared = upstream.seen[0].json["tools"][0]["functionDeclarations"]
    assert [d["name"] for d in declared] == [flat]


def test_gemini_thoughts_are_a_reasoning_summary(gateway: tuple[str, ProviderUpstream]) -> None:
    url, upstream = gateway
    upstream.script(
        gemini_body(
            frame(thought("Pondering.")),
            frame(text("Done.")),
            frame(text(""), finish_reason="STOP", usage=usage_metadata(5, 3, 7)),
        )
    )
    answer = sdk(url).responses.create(
        model="gemini/gemini-2.5-flash", input="go", reasoning={"effort": "low", "summary": "detailed"}
    )
    reasoning, message = answer.output
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "Pondering."
    assert answer.output_text == "Done."
    assert answer.usage is not None and answer.usage.output_tokens_details.reasoning_tokens == 7


def test_gemini_signature_round_trips_without_cutting_the_message(gateway: tuple[str, ProviderUpstream]) -> None:
    """A text part's `thoughtSignature` arrives mid-message: the message stays one item, the
    signature ends the answer as a reasoning item (`encrypted_content`, asked by `include`),
    and going back it is on the model's part again."""
    url, upstream = gateway
    signed = {**text("Hel"), "thoughtSignature": "c2lnbmF0dXJl"}
    upstream.script(
        gemini_body(
            frame(signed), frame(text("lo.")), frame(text(""), finish_reason="STOP", usage=usage_metadata(5, 3, None))
        ),
        text_stream("gemini", ["Again."]),
    )
    client = sdk(url)
    response = post(
        url,
        {"model": "gemini/gemini-2.5-flash", "input": "Hi", "stream": True, "include": ["reasoning.encrypted_content"]},
    )
    output = read_events(response.content)[-1]["response"]["output"]
    assert [item["type"] for item in output] == ["message", "reasoning"]
    assert output[0]["content"][0]["text"] == "Hello." and output[1]["encrypted_content"] == "c2lnbmF0dXJl"
    client.responses.create(
        model="gemini/gemini-2.5-flash",
        store=False,
        input=[{"role": "user", "content": "Hi"}, *output, {"role": "user", "content": "More"}],
    )
    model_turn = upstream.seen[1].json["contents"][1]
    assert model_turn["role"] == "model"
    assert model_turn["parts"] == [{"text": "Hello.", "thoughtSignature": "c2lnbmF0dXJl"}]


def test_tool_choice_requiring_a_built_in_tool_is_a_400(echo_url: str) -> None:
    with pytest.raises(openai.BadRequestError, match="web_search"):
        sdk(echo_url).responses.create(
            model="echo/echo", input="hi", tools=[{"type": "web_search"}], tool_choice={"type": "web_search"}
        )  # type: ignore[typeddict-item]


def test_text_format_and_limits_reach_the_upstream(gateway: tuple[str, ProviderUpstream]) -> None:
    url, upstream = gateway
    upstream.script(text_stream("anthropic", ['{"a": 1}']))
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    sdk(url).responses.create(
        model="anthropic/claude-sonnet-5-5",
        input="json please",
        max_output_tokens=300,
        text={"format": {"type": "json_schema", "name": "a", "schema": schema, "strict": True}},
    )
    sent = upstream.seen[0].json
    assert sent["max_tokens"] == 300 and sent["output_config"]["format"]["type"] == "json_schema"


def test_length_limit_is_incomplete(gateway: tuple[str, ProviderUpstream]) -> None:
    url, upstream = gateway
    upstream.script(b"".join([message_start(3), *text_block(0, ["cut"]), message_delta("max_tokens", 5), MESSAGE_STOP]))
    answer = sdk(url).responses.create(model="anthropic/claude-sonnet-5-5", input="long", max_output_tokens=5)
    assert answer.status == "incomplete" and answer.incomplete_details is not None
    assert answer.incomplete_details.reason == "max_output_tokens"


# --- state ------------------------------------------------------------------------------


def test_previous_response_id_continues_the_conversation(gateway: tuple[str, ProviderUpstream]) -> None:
    url, upstream = gateway
    client = sdk(url)
    upstream.script(text_stream("anthropic", ["Hi Ann."]), text_stream("anthropic", ["Ann."]))
    first = client.responses.create(model="anthropic/claude-sonnet-5-5", input="I am Ann.", instructions="Be brief.")
    second = client.responses.create(
        model="anthropic/claude-sonnet-5-5", input="My name?", previous_response_id=first.id
    )
    assert second.output_text == "Ann."
    sent = upstream.seen[1].json
    assert "system" not in sent  # instructions are not carried over, as OpenAI does
    assert sent["messages"] == [
        {"role": "user", "content": "I am Ann."},
        {"role": "assistant", "content": "Hi Ann."},
        {"role": "user", "content": "My name?"},
    ]
    assert client.responses.retrieve(second.id).output_text == "Ann."


def test_store_false_is_not_kept(echo_url: str) -> None:
    client = sdk(echo_url)
    answer = client.responses.create(model="echo/echo", input="secret", store=False)
    assert answer.store is False
    with pytest.raises(openai.NotFoundError, match=answer.id):
        client.responses.retrieve(answer.id)
    with pytest.raises(openai.NotFoundError, match=answer.id):
        client.responses.create(model="echo/echo", input="more", previous_response_id=answer.id)


def test_delete_removes_a_stored_response(echo_url: str) -> None:
    client = sdk(echo_url)
    answer = client.responses.create(model="echo/echo", input="bye")
    deleted = httpx.delete(f"{echo_url}/v1/responses/{answer.id}", timeout=10)
    assert deleted.json() == {"id": answer.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(answer.id)
    assert httpx.delete(f"{echo_url}/v1/responses/{answer.id}", timeout=10).status_code == 404


def test_unknown_item_reference_is_a_404(echo_url: str) -> None:
    with pytest.raises(openai.NotFoundError, match="msg_nowhere"):
        sdk(echo_url).responses.create(model="echo/echo", input=[{"type": "item_reference", "id": "msg_nowhere"}])


# --- errors -----------------------------------------------------------------------------


def test_errors_in_openai_shape(echo_url: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        sdk(echo_url).responses.create(model="nowhere/x", input="hi")
    assert refused.value.code == "unknown_provider"
    with pytest.raises(openai.BadRequestError, match="input_file"):
        sdk(echo_url).responses.create(
            model="echo/echo", input=[{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]
        )


def test_failure_after_the_start_is_error_then_response_failed(echo_url: str) -> None:
    response = post(echo_url, {"model": "broken/broken-1", "input": "hi", "stream": True})
    events = read_events(response.content)
    assert [e["type"] for e in events][-3:] == ["response.output_item.done", "error", "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert failed["output"][0]["content"][0]["text"] == "partial "


def test_websocket_upgrade_is_a_426(echo_url: str) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with pytest.raises(InvalidStatus) as refused:
        connect(echo_url.replace("http", "ws") + "/v1/responses", open_timeout=10)
    assert refused.value.response.status_code == 426


def test_frames_of_parallel_calls() -> None:
    """Calls streamed interleaved (OpenAI-compatible upstreams) each keep their item."""
    frames = ResponsesFrames(base(), False, {})
    out = frames.tool_call(ToolCallChunk(0, "call_a", "f", "")) + frames.tool_call(ToolCallChunk(1, "call_b", "g", ""))
    out += frames.tool_call(ToolCallChunk(0, arguments='{"x":1}')) + frames.tool_call(ToolCallChunk(1, arguments="{}"))
    out += frames.final(StreamChunk("", FinishReason.TOOL_CALLS, "m", "p"))
    output = read_events(out)[-1]["response"]["output"]
    assert [(o["call_id"], o["arguments"]) for o in output] == [("call_a", '{"x":1}'), ("call_b", "{}")]


# --- background responses ---------------------------------------------------------------

WORDS = " ".join(f"w{i}" for i in range(24))


@pytest.fixture(scope="module")
def slow_echo_url() -> Iterator[str]:
    with serve(create_app(settings(echo_delay_ms=15.0, sse_heartbeat_s=1.0), {"echo": EchoAdapter(15.0)})) as url:
        yield url


def start_background(url: str, events: int, text: str = WORDS) -> tuple[str, list[dict[str, Any]]]:
    """POST a background stream, read `events` whole events, leave: (id, events read)."""
    body = {"model": "echo/echo", "input": text, "stream": True, "background": True}
    with httpx.stream("POST", url + "/v1/responses", json=body, timeout=20) as response:
        assert response.status_code == 200
        received = b""
        for part in response.iter_bytes():
            received += part
            if received.count(b"\n\n") >= events:
                break
    whole = received[: received.rfind(b"\n\n") + 2]
    read = read_events(whole)
    assert response.headers["x-stream-id"] == read[0]["response"]["id"]
    return read[0]["response"]["id"], read


def test_background_stream_cut_and_resumed_exactly_once(slow_echo_url: str) -> None:
    response_id, first = start_background(slow_echo_url, 6)
    last = first[-1]["sequence_number"]
    rest = sdk(slow_echo_url).responses.retrieve(response_id, stream=True, starting_after=last)
    resumed = [event.model_dump() for event in rest]
    events = first + resumed
    assert [e["sequence_number"] for e in events] == list(range(len(events)))  # each event once, in order
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == WORDS
    assert events[-1]["type"] == "response.completed"

    with sdk(slow_echo_url).responses.stream(response_id=response_id, starting_after=3) as stream:
        again = [event.sequence_number for event in stream]
        assert stream.get_final_response().output_text == WORDS
    assert again == list(range(4, len(events)))
    stored = sdk(slow_echo_url).responses.retrieve(response_id)
    assert stored.status == "completed" and stored.background is True and stored.output_text == WORDS


def test_background_stream_cancelled(slow_echo_url: str) -> None:
    response_id, _ = start_background(slow_echo_url, 5, " ".join(f"w{i}" for i in range(400)))
    cancelled = httpx.post(f"{slow_echo_url}/v1/responses/{response_id}/cancel", timeout=20)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    replay = httpx.get(f"{slow_echo_url}/v1/responses/{response_id}?stream=true", timeout=20)
    events = read_events(replay.content)
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert events[-1]["response"]["status"] == "cancelled"
    assert sdk(slow_echo_url).responses.retrieve(response_id).status == "cancelled"


def test_a_failed_background_response_reads_as_failed(echo_url: str) -> None:
    body = {"model": "broken/broken-1", "input": "hi", "stream": True, "background": True}
    events = read_events(httpx.post(echo_url + "/v1/responses", json=body, timeout=20).content)
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    stored = sdk(echo_url).responses.retrieve(events[0]["response"]["id"])
    assert stored.status == "failed" and stored.error is not None and stored.error.code == "server_error"


def test_stream_of_a_response_that_was_not_background(echo_url: str) -> None:
    answer = sdk(echo_url).responses.create(model="echo/echo", input="hi")
    refused = httpx.get(f"{echo_url}/v1/responses/{answer.id}?stream=true", timeout=10)
    assert refused.status_code == 400 and "background" in refused.json()["error"]["message"]


# --- Redis: any replica continues ---------------------------------------------------------


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_redis_store_shared_by_two_gateways(tmp_path: Path) -> None:
    with running_redis(tmp_path) as redis_server:
        config = settings(redis_url=redis_server.url, sse_heartbeat_s=1.0, echo_delay_ms=10.0)
        with (
            serve(create_app(config, {"echo": EchoAdapter(10.0)})) as one,
            serve(create_app(config, {"echo": EchoAdapter(10.0)})) as two,
        ):
            first = sdk(one).responses.create(
                model="echo/echo", input="hello", reasoning={"effort": "low", "summary": "auto"}
            )
            reasoning, message = first.output
            second = sdk(two).responses.create(
                model="echo/echo",
                previous_response_id=first.id,
                input=[
                    {"type": "item_reference", "id": message.id},
                    {"type": "reasoning", "id": reasoning.id, "summary": []},
                    {"role": "user", "content": "from two"},
                ],
            )
            assert second.output_text == "from two"
            assert sdk(one).responses.retrieve(second.id).previous_response_id == first.id
            response_id, events = start_background(one, 4)
            rest = sdk(two).responses.retrieve(response_id, stream=True, starting_after=events[-1]["sequence_number"])
            resumed = [event.model_dump() for event in rest]
            assert [e["sequence_number"] for e in events + resumed] == list(range(len(events) + len(resumed)))
            assert resumed[-1]["response"]["output"][0]["content"][0]["text"] == WORDS


# --- the README's examples -----------------------------------------------------------------


def readme_block(language: str, needle: str) -> str:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.partition("\n## Codex, the Agents SDK and the Responses API\n")[2].partition("\n## ")[0]
    blocks = re.findall(r"^```(\w*)\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    (block,) = [body for lang, body in blocks if lang == language and needle in body]
    return block


def test_the_readme_responses_example_runs(echo_url: str) -> None:
    example = readme_block("python", "client.responses.stream")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(example.replace("http://127.0.0.1:8000", echo_url), "README.md", "exec"), {})
    assert printed.getvalue() == "Hello there, Responses\nand again completed\n"


def test_the_readme_agents_example_runs(echo_url: str) -> None:
    example = readme_block("python", "MultiProvider")
    example = example.replace("http://127.0.0.1:8000", echo_url).replace("anthropic/claude-sonnet-5-5", "echo/echo")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(example, "README.md", "exec"), {})
    assert printed.getvalue() == "Weather in Oslo?\n"
