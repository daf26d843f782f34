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

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import openai
import pydantic
import pytest
from openai.types.responses import ResponseInputItemParam, ToolParam
from openai.types.responses.response_create_params import ResponseCreateParamsStreaming
from streamgate.chat_types import (
    Chunk,
    FinishReason,
    RawEvent,
    SignatureChunk,
    StreamChunk,
    Usage,
    chat_request_decoder,
)
from streamgate.errors import GatewayError, ProviderNotConfiguredError, UpstreamError
from streamgate.providers.anthropic_stream import read_chunks
from streamgate.providers.openai_responses import open_responses_passthrough
from streamgate.providers.openai_stream import OpenAIStreamAdapter
from streamgate.upstream_http import MAX_ERROR_BODY_BYTES
from support import Answer, settings
from test_anthropic_request import sdk_checked as anthropic_checked
from wire_anthropic import SIGNATURE as ANTHROPIC_SIGNATURE
from wire_anthropic import redacted_thinking_block, sdk_message, text_block, thinking_block, whole_stream
from wire_openai import chunk, completion, sse_body, usage_chunk
from wire_openai_responses import (
    ENCRYPTED,
    MODEL,
    REASONING_ID,
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
from wire_upstreams import ProviderUpstream, providers_gateway, text_stream

UPSTREAM_KEY = "sk-upstream-0123"
THOUGHTS = [["Light meets ", "air molecules; "], ["**Answering** ", "λ⁻⁴ 🎓."]]
TEXT = ["Rayleigh", " scattering: ", "blue light 散乱 more.\n", "🌞"]


def reasoning_answer() -> bytes:
    return ResponseScript().reasoning(THOUGHTS).message(TEXT).body(usage_=usage(cached_tokens=6))


def tool_answer() -> bytes:
    return (
        ResponseScript()
        .reasoning([["Need the weather."]])
        .function_call("call_Wx9", "get_weather", ['{"city":', ' "Paris"}'])
        .body()
    )


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
        "function_call",
        "call_Wx9",
        "get_weather",
        '{"city": "Paris"}',
    )
    assert sdk_response(json.dumps(ResponseScript().message(TEXT).response()).encode()).output_text == "".join(TEXT)


# --- the passthrough ---------------------------------------------------------------------------


@pytest.fixture
def upstream() -> Iterator[ResponsesUpstream]:
    upstream = ResponsesUpstream()
    with upstream.loopback.running():
        yield upstream


@pytest.fixture
async def adapter(upstream: ResponsesUpstream) -> AsyncIterator[OpenAIStreamAdapter]:
    adapter = OpenAIStreamAdapter(
        settings(openai_api_key=UPSTREAM_KEY, openai_base_url=upstream.loopback.url, upstream_max_retries=0)
    )
    yield adapter
    await adapter.aclose()


async def relay(
    adapter: OpenAIStreamAdapter, body: bytes, headers: list[tuple[str, str]] | None = None, **options: Any
) -> list[Chunk]:
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
CLIENT_BODY = (
    b'{"model":"gpt-5.5", "instructions": null, "input":[{"type":"message","role":"user","id":"msg_u1",'
    b'"content":[{"type":"input_text","text":"Why blue? \\u00e9 \xf0\x9f\x8c\x8c"}]}],'
    b'"tools":[{"type":"web_search"}], "reasoning":{"effort":"high","summary":"auto"},'
    b'"include":["reasoning.encrypted_content"], "store":false, "stream":true,'
    b'"prompt_cache_key":"c0dex", "x_future_field": {"nested": [1, 2.50, true]}}'
)
CLIENT_HEADERS = [
    ("Authorization", "Bearer sk-client-must-not-pass"),
    ("OpenAI-Beta", "responses=experimental"),
    ("session-id", "019a2b3c-sess"),
    ("x-client-request-id", "req-c1"),
    ("originator", "codex_cli_rs"),
    ("OpenAI-Organization", "org-client"),
    ("cookie", "a=b"),
    ("user-agent", "codex_cli_rs/0.171.0"),
]


@pytest.mark.anyio
async def test_the_stream_passthrough_sends_and_returns_the_bytes_as_they_are(
    upstream: ResponsesUpstream, adapter: OpenAIStreamAdapter
) -> None:
    body = reasoning_answer()
    upstream.stream(body)
    events, final = split(await relay(adapter, CLIENT_BODY, CLIENT_HEADERS, stream=True))

    [received] = upstream.received
    assert (received.method, received.path, received.body) == ("POST", "/v1/responses", CLIENT_BODY)
    headers = received.headers
    assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert (headers["openai-beta"], headers["session-id"], headers["x-client-request-id"], headers["originator"]) == (
        "responses=experimental",
        "019a2b3c-sess",
        "req-c1",
        "codex_cli_rs",
    )
    assert "openai-organization" not in headers and "cookie" not in headers
    assert headers["user-agent"].startswith("AsyncOpenAI/Python") and len(headers["x-request-id"]) == 32

    assert b"".join(event.data for event in events) == body  # every event as it came, in order
    assert [event.token for event in events] == [e.type.endswith(".delta") for e in sdk_events(body)]
    assert await final_response(b"".join(event.data for event in events)) == await final_response(body)
    assert (final.finish_reason, final.model, final.provider) == (FinishReason.STOP, MODEL, "openai")
    assert final.usage == Usage(
        prompt_tokens=14, completion_tokens=160, total_tokens=174, reasoning_tokens=128, cached_tokens=6
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (tool_answer(), FinishReason.TOOL_CALLS),
        (
            ResponseScript().message(["cut"]).body("incomplete", incomplete_details={"reason": "max_output_tokens"}),
            FinishReason.LENGTH,
        ),
        (
            ResponseScript().message(["no"]).body("incomplete", incomplete_details={"reason": "content_filter"}),
            FinishReason.CONTENT_FILTER,
        ),
        (
            ResponseScript().body("failed", error={"code": "server_error", "message": "The model failed."}),
            FinishReason.ERROR,
        ),
    ],
    ids=["function_call", "incomplete", "content_filter", "failed"],
)
@pytest.mark.anyio
async def test_the_final_chunk_tells_how_the_response_ended(
    upstream: ResponsesUpstream, adapter: OpenAIStreamAdapter, body: bytes, reason: FinishReason
) -> None:
    sdk_events(body)
    upstream.stream(body)
    events, final = split(await relay(adapter, CLIENT_BODY, stream=True))
    assert b"".join(event.data for event in events) == body
    assert final.finish_reason is reason and final.usage is not None


@pytest.mark.anyio
async def test_an_error_event_passes_and_ends_the_stream_as_an_error(
    upstream: ResponsesUpstream, adapter: OpenAIStreamAdapter
) -> None:
    script = ResponseScript()
    script.emit("error", code="server_error", message="The server had an error.", param=None)
    body = b"".join(script.events)
    sdk_events(body)
    upstream.stream(body)
    events, final = split(await relay(adapter, CLIENT_BODY, stream=True))
    assert b"".join(event.data for event in events) == body and final.finish_reason is FinishReason.ERROR


@pytest.mark.anyio
async def test_a_stream_cut_before_its_end_is_an_upstream_error(
    upstream: ResponsesUpstream, adapter: OpenAIStreamAdapter
) -> None:
    upstream.stream(b"".join(ResponseScript().message(["half"]).events))
    stream = await open_responses_passthrough(adapter, CLIENT_BODY, [], stream=True)
    received: list[Chunk] = []
    with pytest.raises(UpstreamError, match="ended the stream before its response.completed"):
        async for chunk in stream:
            received.append(chunk)
    await stream.aclose()
    assert received and all(type(chunk) is RawEvent for chunk in received)


OPENAI_400 = (
    b'{\n  "error": {\n    "message": "Invalid value: \'input_texts\'. '
    b"Supported values are: 'input_text'.\","
    b'\n    "type": "invalid_request_error",\n    "param": "input[0].content[0]",\n'
    b'    "code": "invalid_value"\n  }\n}'
)


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "upstream_error"),
        (401, "provider_auth_error"),
        (404, "upstream_error"),
        (429, "rate_limited"),
        (500, "upstream_error"),
    ],
)
@pytest.mark.anyio
async def test_an_error_status_carries_the_upstreams_body(
    upstream: ResponsesUpstream, adapter: OpenAIStreamAdapter, status: int, error_type: str
) -> None:
    upstream.json(OPENAI_400, status)
    with pytest.raises(GatewayError) as caught:
        await open_responses_passthrough(adapter, CLIENT_BODY, [], stream=True)
    error = caught.value
    assert (error.status, error.type, error.provider) == (status if status < 500 else 502, error_type, "openai")
    assert error.upstream_body == OPENAI_400
    assert UPSTREAM_KEY not in error.message


@pytest.mark.anyio
async def test_an_oversize_error_body_is_a_short_upstream_error(
    upstream: ResponsesUpstream, adapter: OpenAIStreamAdapter
) -> None:
    huge = b'{"error": {"message": "' + b"x" * MAX_ERROR_BODY_BYTES + b'"}}'
    upstream.json(huge, 400)
    with pytest.raises(UpstreamError) as caught:
        await open_responses_passthrough(adapter, CLIENT_BODY, [], stream=False)
    error = caught.value
    assert error.upstream_body is None and error.status == 502 and len(error.message) < 120
    assert error.message == (
        f"openai sent an answer too large to read: its answer (HTTP 400) is over {MAX_ERROR_BODY_BYTES} bytes; not read"
    )


@pytest.mark.anyio
async def test_a_non_streamed_answer_is_one_event_then_the_final_chunk(
    upstream: ResponsesUpstream, adapter: OpenAIStreamAdapter
) -> None:
    answer = json.dumps(ResponseScript().reasoning([["Hm."]]).message(TEXT).response(), indent=1).encode()
    upstream.json(answer)
    body = CLIENT_BODY.replace(b'"stream":true', b'"stream":false')
    [event], final = split(await relay(adapter, body, stream=False))
    assert upstream.received[0].body == body
    assert (event.data, event.token) == (answer, False)
    assert (await created_response(event.data)).output_text == "".join(TEXT)
    assert final.finish_reason is FinishReason.STOP and final.usage is not None and final.usage.total_tokens == 174


@pytest.mark.parametrize(
    ("method", "path", "answer", "reason"),
    [
        (
            "GET",
            f"/responses/{RESPONSE_ID}?include%5B%5D=reasoning.encrypted_content",
            json.dumps(ResponseScript().function_call("call_1", "f", ["{}"]).response()).encode(),
            FinishReason.TOOL_CALLS,
        ),
        (
            "DELETE",
            f"/responses/{RESPONSE_ID}",
            json.dumps({"id": RESPONSE_ID, "object": "response.deleted", "deleted": True}).encode(),
            FinishReason.STOP,
        ),
        (
            "POST",
            f"/responses/{RESPONSE_ID}/cancel",
            json.dumps(ResponseScript().response("cancelled", background=True)).encode(),
            FinishReason.STOP,
        ),
    ],
    ids=["get", "delete", "cancel"],
)
@pytest.mark.anyio
async def test_get_delete_and_cancel_reach_their_paths(
    upstream: ResponsesUpstream,
    adapter: OpenAIStreamAdapter,
    method: str,
    path: str,
    answer: bytes,
    reason: FinishReason,
) -> None:
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


# --- reasoning for the native and Chat Completions endpoints ---------------------------------

SDK_BODY = pydantic.TypeAdapter(ResponseCreateParamsStreaming)
SDK_INPUT = pydantic.TypeAdapter(list[ResponseInputItemParam])  # `Iterable`s in SDK_BODY are checked lazily
SDK_TOOLS = pydantic.TypeAdapter(list[ToolParam])

QUESTION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris? 🌦"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SIGNED = f"{REASONING_ID}:{ENCRYPTED}"  # how the adapter signs OpenAI's reasoning item


def sdk_checked(sent: dict[str, Any]) -> dict[str, Any]:
    """`sent`, after the SDK's request types accepted it (input items and tools included)."""
    SDK_BODY.validate_python(sent)
    SDK_INPUT.validate_python(sent["input"])
    SDK_TOOLS.validate_python(sent.get("tools", []))
    return sent


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[str, ProviderUpstream]]:
    with providers_gateway() as running:
        yield running


def native(url: str, **fields: Any) -> Answer:
    return Answer(
        httpx2.post(
            f"{url}/api/v1/chat/stream",
            timeout=10,
            json={"provider": "openai", "model": "gpt-5.5", "messages": QUESTION, **fields},
        )
    )


def frames(answer: Answer) -> list[tuple[str, dict[str, Any]]]:
    return [(e.event, json.loads(e.data)) for e in answer.events if e.data != "[DONE]"]


WHO = {"model": "gpt-5.5", "provider": "openai"}


def test_native_reasoning_streams_from_the_responses_api(gateway: tuple[str, ProviderUpstream]) -> None:
    url, upstream = gateway
    upstream.script(reasoning_answer())
    answer = native(url, include_reasoning=True, reasoning_effort="high", max_tokens=4000)
    assert answer.status == 200 and answer.raw.endswith(b"data: [DONE]\n\n")
    usage = {
        "prompt_tokens": 14,
        "completion_tokens": 160,
        "total_tokens": 174,
        "reasoning_tokens": 128,
        "cached_tokens": 6,
    }
    assert frames(answer) == [
        *(("reasoning", {"reasoning": piece, **WHO}) for piece in THOUGHTS[0]),
        ("reasoning", {"reasoning": "\n\n", **WHO}),  # the summary's second part
        *(("reasoning", {"reasoning": piece, **WHO}) for piece in THOUGHTS[1]),
        *(("message", {"content": piece, "finish_reason": None, **WHO, "usage": None}) for piece in TEXT),
        ("message", {"content": "", "finish_reason": "stop", **WHO, "usage": usage}),
    ]
    [sent] = upstream.seen
    assert sent.path == "/v1/responses"
    assert sdk_checked(sent.json) == {
        "model": "gpt-5.5",
        "stream": True,
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "reasoning": {"summary": "auto", "effort": "high"},
        "max_output_tokens": 4000,
        "input": [
            {"type": "message", "role": "developer", "content": "Be brief."},
            {"type": "message", "role": "user", "content": "Weather in Paris? 🌦"},
        ],
    }


def test_native_reasoning_with_a_tool_call(gateway: tuple[str, ProviderUpstream]) -> None:
    url, upstream = gateway
    upstream.script(tool_answer())
    answer = native(url, include_reasoning=True, tools=[WEATHER], tool_choice="required")
    assert frames(answer) == [
        ("reasoning", {"reasoning": "Need the weather.", **WHO}),
        ("tool_call", {"index": 0, "id": "call_Wx9", "name": "get_weather", "arguments": ""}),
        ("tool_call", {"index": 0, "arguments": '{"city":'}),
        ("tool_call", {"index": 0, "arguments": ' "Paris"}'}),
        (
            "message",
            {
                "content": "",
                "finish_reason": "tool_calls",
                **WHO,
                "usage": {"prompt_tokens": 14, "completion_tokens": 160, "total_tokens": 174, "reasoning_tokens": 128},
            },
        ),
    ]
    sent = sdk_checked(upstream.seen[0].json)
    assert "effort" not in sent["reasoning"]  # not asked: the model's own default
    assert (sent["tools"], sent["tool_choice"]) == (
        [
            {
                "type": "function",
                "name": "get_weather",
                "parameters": WEATHER["function"]["parameters"],  # type: ignore[index]
                "strict": False,
                "description": "The weather now.",
            }
        ],
        "required",
    )


@pytest.mark.anyio
async def test_the_reasoning_signature_goes_back_as_the_reasoning_item(gateway: tuple[str, ProviderUpstream]) -> None:
    """The adapter signs each finished reasoning item with its id and encrypted content; a
    turn sending that `ThinkingPart` back (here through the native body's `thinking`) gives
    OpenAI the reasoning item again; unsigned thinking and another provider's is dropped."""
    url, upstream = gateway
    upstream.script(tool_answer())
    adapter = OpenAIStreamAdapter(
        settings(openai_api_key=UPSTREAM_KEY, openai_base_url=upstream.loopback.url, upstream_max_retries=0)
    )
    request = chat_request_decoder.decode(
        json.dumps({"provider": "openai", "model": "o4-mini", "messages": QUESTION, "include_reasoning": True})
    )
    stream = await adapter.stream_chat(request)
    chunks = [chunk async for chunk in stream]
    await stream.aclose()
    await adapter.aclose()
    assert [c for c in chunks if type(c) is SignatureChunk] == [SignatureChunk(signature=SIGNED)]
    assert chunks.index(SignatureChunk(signature=SIGNED)) == 1  # after the item's reasoning, before the call

    upstream.script(ResponseScript().message(["Sunny."]).body())
    call = {"id": "call_Wx9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    thinking = [
        {"text": "Need the weather.", "signature": SIGNED},
        {"text": "unsigned"},
        {"text": "Claude's", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"},
    ]
    turns = [
        *QUESTION,
        {"role": "assistant", "tool_calls": [call], "thinking": thinking},
        {"role": "tool", "tool_call_id": "call_Wx9", "content": "18°C, sunny"},
    ]
    answer = native(url, messages=turns, include_reasoning=True, tools=[WEATHER])
    assert answer.text == "Sunny."
    assert sdk_checked(upstream.seen[0].json)["input"][2:] == [
        {
            "type": "reasoning",
            "id": REASONING_ID,
            "summary": [{"type": "summary_text", "text": "Need the weather."}],
            "encrypted_content": ENCRYPTED,
        },
        {"type": "function_call", "call_id": "call_Wx9", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call_output", "call_id": "call_Wx9", "output": "18°C, sunny"},
    ]


def test_v1_chat_completions_streams_reasoning_content_from_the_responses_api(
    gateway: tuple[str, ProviderUpstream],
) -> None:
    """`/v1` asks for reasoning text by default: the official SDK gets OpenAI's summary as
    `delta.reasoning_content`, and the counts."""
    url, upstream = gateway
    upstream.script(reasoning_answer())
    with openai.OpenAI(base_url=f"{url}/v1", api_key="sk-gateway", max_retries=0) as client:
        chunks = list(
            client.chat.completions.create(
                model="gpt-5.5",
                messages=QUESTION,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    assert reasoning == "\n\n".join("".join(part) for part in THOUGHTS)
    assert "".join(d.content or "" for d in deltas) == "".join(TEXT)
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert (usage.prompt_tokens, usage.completion_tokens_details.reasoning_tokens) == (14, 128)
    assert upstream.seen[0].path == "/v1/responses"


@pytest.mark.parametrize(
    "fields",
    [
        {"model": "gpt-5.5"},  # reasoning not asked for
        {"model": "gpt-4o", "include_reasoning": True},  # no reasoning model
        {"model": "gpt-5.5", "include_reasoning": True, "reasoning_effort": "none"},
        {"model": "gpt-5.5", "include_reasoning": True, "stop": ["END"]},  # the Responses API has no `stop`
    ],
    ids=["plain", "gpt-4o", "effort-none", "stop"],
)
def test_other_requests_take_chat_completions_as_before(
    gateway: tuple[str, ProviderUpstream], fields: dict[str, Any]
) -> None:
    url, upstream = gateway
    upstream.script(completion(TEXT, usage=(9, 12)))
    assert native(url, **fields).text == "".join(TEXT)
    assert upstream.seen[0].path == "/v1/chat/completions"


def test_cached_tokens_on_the_chat_completions_path(gateway: tuple[str, ProviderUpstream]) -> None:
    url, upstream = gateway
    end = usage_chunk(2006, 300)
    end["usage"]["prompt_tokens_details"]["cached_tokens"] = 1920
    upstream.script(sse_body([chunk(role="assistant"), chunk("Hi"), chunk(finish_reason="stop"), end]))
    assert native(url, model="gpt-4o").messages[-1]["usage"] == {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "cached_tokens": 1920,
    }


def test_a_failed_response_ends_the_stream_with_openais_message(gateway: tuple[str, ProviderUpstream]) -> None:
    url, upstream = gateway
    script = ResponseScript().reasoning([["Thinking"]])
    upstream.script(script.body("failed", error={"code": "server_error", "message": "The model crashed."}))
    answer = native(url, include_reasoning=True)
    *_, final, error = frames(answer)
    assert final == ("message", {"content": "", "finish_reason": "error", **WHO, "usage": None})
    assert error == (
        "error",
        {
            "error": {
                "type": "upstream_error",
                "provider": "openai",
                "message": "openai failed mid-stream: The model crashed.",
            }
        },
    )


# --- Anthropic thinking signatures ---------------------------------------------------------------


async def anthropic_chunks(reads: list[bytes], include_reasoning: bool) -> list[Chunk]:
    async def body() -> AsyncIterator[bytes]:
        for read in reads:
            yield read

    return [chunk async for chunk in read_chunks(body(), "claude-sonnet-5-5", include_reasoning)]


REDACTED_DATA = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIw"  # `wire_anthropic.redacted_thinking_block`


def test_anthropic_signatures_and_redacted_thinking_are_signature_chunks() -> None:
    reads = whole_stream(thinking_block(0, ["Hm, ", "yes."]), redacted_thinking_block(1), text_block(2, ["Hi"]))
    assert [b.type for b in sdk_message(reads).content] == ["thinking", "redacted_thinking", "text"]
    chunks = asyncio.run(anthropic_chunks(reads, include_reasoning=True))
    assert [type(c).__name__ for c in chunks] == [
        "ReasoningChunk",
        "ReasoningChunk",
        "SignatureChunk",
        "SignatureChunk",
        "StreamChunk",
        "StreamChunk",
    ]
    assert [c for c in chunks if type(c) is SignatureChunk] == [
        SignatureChunk(signature=ANTHROPIC_SIGNATURE),
        SignatureChunk(signature="redacted_thinking:" + REDACTED_DATA),
    ]
    assert not [c for c in asyncio.run(anthropic_chunks(reads, include_reasoning=False)) if type(c) is SignatureChunk]


def test_anthropic_thinking_goes_back_as_signed_blocks(gateway: tuple[str, ProviderUpstream]) -> None:
    """A native request whose assistant turn carries `thinking` reaches Anthropic with the
    signed thinking blocks first in that turn (unsigned and OpenAI-signed parts dropped), and
    a model with manual thinking keeps thinking on while it continues the tool call."""
    url, upstream = gateway
    upstream.script(text_stream("anthropic", ["Sunny."]))
    call = {"id": "toolu_01A", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    thinking = [
        {"text": "Need the weather.", "signature": ANTHROPIC_SIGNATURE},
        {"text": "unsigned"},
        {"signature": "redacted_thinking:" + REDACTED_DATA},
        {"text": "OpenAI's", "signature": SIGNED},
    ]
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [call], "thinking": thinking},
        {"role": "tool", "tool_call_id": "toolu_01A", "content": "18°C"},
    ]
    answer = Answer(
        httpx2.post(
            f"{url}/api/v1/chat/stream",
            timeout=10,
            json={
                "provider": "anthropic",
                "model": "claude-sonnet-4-5",
                "messages": messages,
                "tools": [WEATHER],
                "reasoning_effort": "high",
                "include_reasoning": True,
            },
        )
    )
    assert answer.text == "Sunny."
    sent = anthropic_checked(upstream.seen[0].json)
    assert sent["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Need the weather.", "signature": ANTHROPIC_SIGNATURE},
            {"type": "redacted_thinking", "data": REDACTED_DATA},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
        ],
    }
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 12288}


def test_an_assistant_turn_with_only_unsigned_thinking_stays_plain(gateway: tuple[str, ProviderUpstream]) -> None:
    url, upstream = gateway
    upstream.script(text_stream("anthropic", ["Ok."]))
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!", "thinking": [{"text": "unsigned"}]},
        {"role": "user", "content": "Bye"},
    ]
    Answer(httpx2.post(f"{url}/api/v1/chat/stream", timeout=10, json={"provider": "anthropic", "messages": messages}))
    assert upstream.seen[0].json["messages"][1] == {"role": "assistant", "content": "Hello!"}
