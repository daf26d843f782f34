"""`providers/openai_responses.py` against a loopback upstream speaking OpenAI's Responses
API (`wire_openai_responses`, its bytes proven by the official SDK), through the real
`openai` adapter and its aiohttp transport:

- the passthrough: the body and the relevant headers reach the upstream exactly, the
  events come back exactly, one final chunk with the finish reason and usage; errors
  carry the upstream's body (bounded); non-streamed answers, `GET`, `DELETE`, `cancel`;
- reasoning for the native and Chat Completions endpoints through the upstream Responses
  API: `reasoning` frames, tool calls, the signature round trip;
- Anthropic thinking signatures sent back as signed thinking blocks.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from streamgate.chat_types import Chunk, FinishReason, RawEvent, StreamChunk, Usage
from streamgate.errors import GatewayError, ProviderNotConfiguredError, UpstreamError
from streamgate.providers.openai_responses import open_responses_passthrough
from streamgate.providers.openai_stream import OpenAIStreamAdapter
from streamgate.providers.stainless import MAX_ERROR_BODY_BYTES
from support import settings
from wire_openai_responses import (
    ENCRYPTED,
    MODEL,
    RESPONSE_ID,
    ResponseScript,
    ResponsesUpstream,
    created_response,
    final_response,
    sdk_events,
    sdk_final,
    sdk_response,
    usage,
)

UPSTREAM_KEY = "sk-upstream-0123"
THOUGHTS = [["Light meets ", "air molecules; "], ["**Answering** ", "λ⁻⁴ 🎓."]]
TEXT = ["Rayleigh", " scattering: ", "blue light 散乱 more.\n", "🌞"]


def reasoning_answer() -> bytes:
    return ResponseScript().reasoning(THOUGHTS).message(TEXT).body(usage_=usage(cached_tokens=6))


def tool_answer() -> bytes:
    return ResponseScript().reasoning([["Need the weather."]]).function_call(
        "call_Wx9", "get_weather", ['{"city":', ' "Paris"}']).body()


# --- the scripted bytes are OpenAI's --------------------------------------------------------


def test_the_scripted_streams_are_openai_wire() -> None:
    """Every event validates as the SDK's own class for its type, and the SDK's
    `responses.stream()` accumulates each stream into the response its last event holds."""
    body = reasoning_answer()
    assert [e.sequence_number for e in sdk_events(body)] == list(range(24))
    final = sdk_final(body)
    assert final.output_text == "".join(TEXT)
    assert [s.text for s in final.output[0].summary] == ["".join(p) for p in THOUGHTS]  # type: ignore[union-attr]
    assert final.output[0].encrypted_content == ENCRYPTED  # type: ignore[union-attr]
    assert final.usage is not None and final.usage.input_tokens_details.cached_tokens == 6
    call = sdk_final(tool_answer()).output[1]
    assert (call.type, call.call_id, call.name, call.arguments) == (  # type: ignore[union-attr]
        "function_call", "call_Wx9", "get_weather", '{"city": "Paris"}')
    assert sdk_response(json.dumps(ResponseScript().message(TEXT).response()).encode()).output_text == "".join(TEXT)


# --- the passthrough ---------------------------------------------------------------------------


@pytest.fixture
def upstream() -> Iterator[ResponsesUpstream]:
    upstream = ResponsesUpstream()
    with upstream.loopback.running():
        yield upstream


@pytest.fixture
async def adapter(upstream: ResponsesUpstream) -> AsyncIterator[OpenAIStreamAdapter]:
    adapter = OpenAIStreamAdapter(settings(openai_api_key=UPSTREAM_KEY, openai_base_url=upstream.loopback.url,
                                           upstream_max_retries=0))
    yield adapter
    await adapter.aclose()


async def relay(adapter: OpenAIStreamAdapter, body: bytes, headers: list[tuple[str, str]] | None = None,
                **options: Any) -> list[Chunk]:
    stream = await open_responses_passthrough(adapter, body, headers or [], **options)
    try:
        return [chunk async for chunk in stream]
    finally:
        await stream.aclose()


def split(chunks: list[Chunk]) -> tuple[list[RawEvent], StreamChunk]:
    """The relayed events, and the final chunk (which must come last, once)."""
    *events, final = chunks
    assert all(type(event) is RawEvent for event in events) and type(final) is StreamChunk
    return events, final  # type: ignore[return-value]


#: A Codex-like body: spacing, key order, escapes and fields the gateway does not know.
CLIENT_BODY = (b'{"model":"gpt-5.5", "instructions": null, "input":[{"type":"message","role":"user","id":"msg_u1",'
               b'"content":[{"type":"input_text","text":"Why blue? \\u00e9 \xf0\x9f\x8c\x8c"}]}],'
               b'"tools":[{"type":"web_search"}], "reasoning":{"effort":"high","summary":"auto"},'
               b'"include":["reasoning.encrypted_content"], "store":false, "stream":true,'
               b'"prompt_cache_key":"c0dex", "x_future_field": {"nested": [1, 2.50, true]}}')
CLIENT_HEADERS = [
    ("Authorization", "Bearer sk-client-must-not-pass"), ("OpenAI-Beta", "responses=experimental"),
    ("session-id", "019a2b3c-sess"), ("x-client-request-id", "req-c1"), ("originator", "codex_cli_rs"),
    ("OpenAI-Organization", "org-client"), ("cookie", "a=b"), ("user-agent", "codex_cli_rs/0.171.0"),
]


@pytest.mark.anyio
async def test_the_stream_passthrough_sends_and_returns_the_bytes_as_they_are(
        upstream: ResponsesUpstream, adapter: OpenAIStreamAdapter) -> None:
    body = reasoning_answer()
    upstream.stream(body)
    events, final = split(await relay(adapter, CLIENT_BODY, CLIENT_HEADERS, stream=True))

    [received] = upstream.received
    assert (received.method, received.path, received.body) == ("POST", "/v1/responses", CLIENT_BODY)
    headers = received.headers
    assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert (headers["openai-beta"], headers["session-id"], headers["x-client-request-id"], headers["originator"]) == (
        "responses=experimental", "019a2b3c-sess", "req-c1", "codex_cli_rs")
    assert "openai-organization" not in headers and "cookie" not in headers
    assert headers["user-agent"].startswith("AsyncOpenAI/Python") and len(headers["x-request-id"]) == 32

    assert b"".join(event.data for event in events) == body  # every event as it came, in order
    assert [event.token for event in events] == [e.type.endswith(".delta") for e in sdk_events(body)]
    assert await final_response(b"".join(event.data for event in events)) == await final_response(body)
    assert (final.finish_reason, final.model, final.provider) == (FinishReason.STOP, MODEL, "openai")
    assert final.usage == Usage(prompt_tokens=14, completion_tokens=160, total_tokens=174, reasoning_tokens=128,
                                cached_tokens=6)


@pytest.mark.parametrize(("body", "reason"), [
    (tool_answer(), FinishReason.TOOL_CALLS),
    (ResponseScript().message(["cut"]).body("incomplete", incomplete_details={"reason": "max_output_tokens"}),
     FinishReason.LENGTH),
    (ResponseScript().message(["no"]).body("incomplete", incomplete_details={"reason": "content_filter"}),
     FinishReason.CONTENT_FILTER),
    (ResponseScript().body("failed", error={"code": "server_error", "message": "The model failed."}),
     FinishReason.ERROR),
], ids=["function_call", "incomplete", "content_filter", "failed"])
@pytest.mark.anyio
async def test_the_final_chunk_tells_how_the_response_ended(
        upstream: ResponsesUpstream, adapter: OpenAIStreamAdapter, body: bytes, reason: FinishReason) -> None:
    sdk_events(body)
    upstream.stream(body)
    events, final = split(await relay(adapter, CLIENT_BODY, stream=True))
    assert b"".join(event.data for event in events) == body
    assert final.finish_reason is reason and final.usage is not None


@pytest.mark.anyio
async def test_an_error_event_passes_and_ends_the_stream_as_an_error(
        upstream: ResponsesUpstream, adapter: OpenAIStreamAdapter) -> None:
    script = ResponseScript()
    script.emit("error", code="server_error", message="The server had an error.", param=None)
    body = b"".join(script.events)
    sdk_events(body)
    upstream.stream(body)
    events, final = split(await relay(adapter, CLIENT_BODY, stream=True))
    assert b"".join(event.data for event in events) == body and final.finish_reason is FinishReason.ERROR


@pytest.mark.anyio
async def test_a_stream_cut_before_its_end_is_an_upstream_error(
        upstream: ResponsesUpstream, adapter: OpenAIStreamAdapter) -> None:
    upstream.stream(b"".join(ResponseScript().message(["half"]).events))
    stream = await open_responses_passthrough(adapter, CLIENT_BODY, [], stream=True)
    received: list[Chunk] = []
    with pytest.raises(UpstreamError, match="ended the stream before its response.completed"):
        async for chunk in stream:
            received.append(chunk)
    await stream.aclose()
    assert received and all(type(chunk) is RawEvent for chunk in received)


OPENAI_400 = (b'{\n  "error": {\n    "message": "Invalid value: \'input_texts\'. '
              b'Supported values are: \'input_text\'.",'
              b'\n    "type": "invalid_request_error",\n    "param": "input[0].content[0]",\n'
              b'    "code": "invalid_value"\n  }\n}')


@pytest.mark.parametrize(("status", "error_type"), [
    (400, "upstream_error"), (401, "provider_auth_error"), (404, "upstream_error"), (429, "rate_limited"),
    (500, "upstream_error"),
])
@pytest.mark.anyio
async def test_an_error_status_carries_the_upstreams_body(
        upstream: ResponsesUpstream, adapter: OpenAIStreamAdapter, status: int, error_type: str) -> None:
    upstream.json(OPENAI_400, status)
    with pytest.raises(GatewayError) as caught:
        await open_responses_passthrough(adapter, CLIENT_BODY, [], stream=True)
    error = caught.value
    assert (error.status, error.type, error.provider) == (status if status < 500 else 502, error_type, "openai")
    assert error.upstream_body == OPENAI_400
    assert UPSTREAM_KEY not in error.message


@pytest.mark.anyio
async def test_an_oversize_error_body_is_a_short_upstream_error(
        upstream: ResponsesUpstream, adapter: OpenAIStreamAdapter) -> None:
    huge = b'{"error": {"message": "' + b"x" * MAX_ERROR_BODY_BYTES + b'"}}'
    upstream.json(huge, 400)
    with pytest.raises(UpstreamError) as caught:
        await open_responses_passthrough(adapter, CLIENT_BODY, [], stream=False)
    error = caught.value
    assert error.upstream_body is None and error.status == 502 and len(error.message) < 120
    assert error.message == f"openai answered HTTP 400 with an error body over {MAX_ERROR_BODY_BYTES} bytes"


@pytest.mark.anyio
async def test_a_non_streamed_answer_is_one_event_then_the_final_chunk(
        upstream: ResponsesUpstream, adapter: OpenAIStreamAdapter) -> None:
    answer = json.dumps(ResponseScript().reasoning([["Hm."]]).message(TEXT).response(), indent=1).encode()
    upstream.json(answer)
    body = CLIENT_BODY.replace(b'"stream":true', b'"stream":false')
    [event], final = split(await relay(adapter, body, stream=False))
    assert upstream.received[0].body == body
    assert (event.data, event.token) == (answer, False)
    assert (await created_response(event.data)).output_text == "".join(TEXT)
    assert final.finish_reason is FinishReason.STOP and final.usage is not None and final.usage.total_tokens == 174


@pytest.mark.parametrize(("method", "path", "answer", "reason"), [
    ("GET", f"/responses/{RESPONSE_ID}?include%5B%5D=reasoning.encrypted_content",
     json.dumps(ResponseScript().function_call("call_1", "f", ["{}"]).response()).encode(), FinishReason.TOOL_CALLS),
    ("DELETE", f"/responses/{RESPONSE_ID}",
     json.dumps({"id": RESPONSE_ID, "object": "response.deleted", "deleted": True}).encode(), FinishReason.STOP),
    ("POST", f"/responses/{RESPONSE_ID}/cancel",
     json.dumps(ResponseScript().response("cancelled", background=True)).encode(), FinishReason.STOP),
], ids=["get", "delete", "cancel"])
@pytest.mark.anyio
async def test_get_delete_and_cancel_reach_their_paths(
        upstream: ResponsesUpstream, adapter: OpenAIStreamAdapter, method: str, path: str, answer: bytes,
        reason: FinishReason) -> None:
    upstream.json(answer)
    [event], final = split(await relay(adapter, b"", [("session-id", "s1")], stream=False, method=method, path=path))
    [received] = upstream.received
    assert (received.method, received.path, received.body) == (method, "/v1" + path, b"")
    assert received.headers["authorization"] == f"Bearer {UPSTREAM_KEY}" and received.headers["session-id"] == "s1"
    assert event.data == answer and final.finish_reason is reason


@pytest.mark.anyio
async def test_a_stored_stream_is_resumed_with_get(upstream: ResponsesUpstream, adapter: OpenAIStreamAdapter) -> None:
    body = reasoning_answer()
    upstream.stream(body)
    path = f"/responses/{RESPONSE_ID}?stream=true&starting_after=3"
    events, final = split(await relay(adapter, b"", stream=True, method="GET", path=path))
    assert (upstream.received[0].method, upstream.received[0].path) == ("GET", "/v1" + path)
    assert b"".join(event.data for event in events) == body and final.finish_reason is FinishReason.STOP


@pytest.mark.anyio
async def test_without_a_key_nothing_is_sent(upstream: ResponsesUpstream) -> None:
    adapter = OpenAIStreamAdapter(settings(openai_base_url=upstream.loopback.url))
    with pytest.raises(ProviderNotConfiguredError, match="set OPENAI_API_KEY"):
        await open_responses_passthrough(adapter, CLIENT_BODY, [], stream=True)
    await adapter.aclose()
    assert upstream.received == []
