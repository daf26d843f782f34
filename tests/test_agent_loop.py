"""The agent loop through the gateway, for each provider: the official `openai` SDK on
`/v1/chat/completions` (the `stream()` helper, `create` not streamed) and the native
`/api/v1/chat/stream` — call → run the tool locally → `tool` message → final text —
against one loopback upstream speaking each provider's real streaming wire (Gemini both
2.5 and 3, which thinks first and wants its call signatures back). The second turn's
upstream request is asserted in the provider's own form."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import httpx2
import openai
import pytest
from support import Answer
from wire_anthropic import sdk_message, text_block, tool_block, whole_stream
from wire_gemini import frame, function_call, sdk_request, sdk_stream, text, thought, usage_metadata
from wire_gemini import sse_body as gemini_body
from wire_openai import call_arguments, call_start, chunk, sdk_final, sse_body, tool_chunk, usage_chunk
from wire_together import MAVERICK, together_chunk
from wire_upstreams import ProviderUpstream, providers_gateway, text_stream

pytestmark = pytest.mark.anyio

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time in a time zone.",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
    },
}
TOOLS = [WEATHER, TIME]
QUESTION = "Weather and time in Paris?"

#: The calls' arguments as the model wrote them; the weather call's JSON is cut inside an
#: escape (a fragment ends in the backslash of `\"`) and carries multi-byte characters.
WEATHER_ARGS = '{"city": "Paris – \\"été\\" 🌞", "unit": "°C"}'
_CUT = WEATHER_ARGS.index("\\") + 1
WEATHER_FRAGMENTS = [WEATHER_ARGS[:_CUT], WEATHER_ARGS[_CUT : _CUT + 9], WEATHER_ARGS[_CUT + 9 :]]
TIME_ARGS = '{"tz": "Europe/Paris"}'
TIME_FRAGMENTS = ['{"tz": ', '"Europe/Paris"}']
FINAL = ["Paris: 18 °C", " and sunny 🌞, ", "14:05."]


def get_weather(city: str, unit: str = "°C") -> str:
    return json.dumps({"city": city, "celsius": 18, "unit": unit}, ensure_ascii=False)


def get_time(tz: str) -> str:
    return "14:05"


LOCAL_TOOLS: dict[str, Callable[..., str]] = {"get_weather": get_weather, "get_time": get_time}


def compact(arguments: str) -> str:
    """Arguments as a provider that sends them parsed (Gemini) gives them back: compact JSON."""
    return json.dumps(json.loads(arguments), ensure_ascii=False, separators=(",", ":"))


# --- each provider's wire ------------------------------------------------------------------

CALL_IDS = ("call_W8hqZ2", "call_T2mzQ7")


def openai_calls(lead: bool = True, model: str = "gpt-4o-2024-08-06") -> bytes:
    """Text (`lead`) then two parallel calls; without text the calls' first delta carries
    the role and `content: null`, as OpenAI sends it."""
    start = [chunk(role="assistant", model=model), chunk("Let me check.", model=model)] if lead else []
    return sse_body(
        [
            *start,
            tool_chunk(call_start(0, CALL_IDS[0], "get_weather"), first=not lead, model=model),
            *(tool_chunk(call_arguments(0, f), model=model) for f in WEATHER_FRAGMENTS),
            tool_chunk(call_start(1, CALL_IDS[1], "get_time"), model=model),
            *(tool_chunk(call_arguments(1, f), model=model) for f in TIME_FRAGMENTS),
            chunk(finish_reason="tool_calls", model=model),
            usage_chunk(40, 31, model=model),
        ]
    )


def together_calls(lead: bool = True) -> bytes:
    return sse_body(
        [
            *([together_chunk("Let me check.")] if lead else []),
            together_chunk("", tool_calls=[call_start(0, CALL_IDS[0], "get_weather")]),
            *(together_chunk("", tool_calls=[call_arguments(0, f)]) for f in WEATHER_FRAGMENTS),
            together_chunk("", tool_calls=[call_start(1, CALL_IDS[1], "get_time")]),
            *(together_chunk("", tool_calls=[call_arguments(1, f)]) for f in TIME_FRAGMENTS),
            together_chunk("", "tool_calls", {"prompt_tokens": 40, "completion_tokens": 31, "total_tokens": 71}),
        ]
    )


TOOLU_IDS = ("toolu_01WeatherA", "toolu_01TimeB")


def anthropic_calls(lead: bool = True) -> bytes:
    first = int(lead)  # the calls' block indexes follow the text block's
    return b"".join(
        whole_stream(
            *([text_block(0, ["Let me check."])] if lead else []),
            tool_block(first, TOOLU_IDS[0], "get_weather", ["", *WEATHER_FRAGMENTS]),
            tool_block(first + 1, TOOLU_IDS[1], "get_time", TIME_FRAGMENTS),
            stop_reason="tool_use",
            output_tokens=46,
        )
    )


#: A Gemini thought signature (opaque base64 with `+`, `/` and padding).
SIGNATURE = base64.b64encode(b"\xfb\xff\xbf signed call " * 7).decode()


def gemini_calls(lead: bool = True) -> bytes:
    return gemini_body(
        *([frame(text("Let me check."))] if lead else []),
        frame(function_call("get_weather", json.loads(WEATHER_ARGS), SIGNATURE)),
        frame(
            function_call("get_time", json.loads(TIME_ARGS)), finish_reason="STOP", usage=usage_metadata(40, 31, None)
        ),
    )


def gemini_3_calls(lead: bool = True) -> bytes:
    """Gemini 3 thinks first (a thought summary when asked), then the same answer."""
    model = {"model_version": "gemini-3.8-flash"}
    return gemini_body(
        frame(thought("**Planning** two lookups."), **model),
        *([frame(text("Let me check."), **model)] if lead else []),
        frame(function_call("get_weather", json.loads(WEATHER_ARGS), SIGNATURE), **model),
        frame(
            function_call("get_time", json.loads(TIME_ARGS)),
            finish_reason="STOP",
            usage=usage_metadata(40, 31, None),
            **model,
        ),
    )


Calls = list[tuple[str, str, str]]  # (id, name, arguments) of each call, as the client sent it back
RESULTS = [get_weather('Paris – "été" 🌞'), "14:05"]


def openai_second_turn(calls: Calls, lead: bool) -> list[dict[str, Any]]:
    """OpenAI and Together get the conversation as the client sent it (an assistant
    message without text has no `content`)."""
    return [
        {"role": "user", "content": QUESTION},
        {
            "role": "assistant",
            **({"content": "Let me check."} if lead else {}),
            "tool_calls": [{"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in calls],
        },
        *({"role": "tool", "tool_call_id": i, "content": r} for (i, _, _), r in zip(calls, RESULTS)),
    ]


def anthropic_second_turn(_: Calls, lead: bool) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": QUESTION},
        {
            "role": "assistant",
            "content": [
                *([{"type": "text", "text": "Let me check."}] if lead else []),
                {"type": "tool_use", "id": TOOLU_IDS[0], "name": "get_weather", "input": json.loads(WEATHER_ARGS)},
                {"type": "tool_use", "id": TOOLU_IDS[1], "name": "get_time", "input": {"tz": "Europe/Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": TOOLU_IDS[0], "content": RESULTS[0]},
                {"type": "tool_result", "tool_use_id": TOOLU_IDS[1], "content": RESULTS[1]},
            ],
        },
    ]


def gemini_second_turn(_: Calls, lead: bool) -> list[dict[str, Any]]:
    return [
        {"role": "user", "parts": [{"text": QUESTION}]},
        {
            "role": "model",
            "parts": [
                *([{"text": "Let me check."}] if lead else []),
                {
                    "functionCall": {"name": "get_weather", "args": json.loads(WEATHER_ARGS)},
                    "thoughtSignature": SIGNATURE,
                },
                {"functionCall": {"name": "get_time", "args": {"tz": "Europe/Paris"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": json.loads(RESULTS[0])}},
                {"functionResponse": {"name": "get_time", "response": {"output": RESULTS[1]}}},
            ],
        },
    ]


class Case(NamedTuple):
    provider: str
    model: str
    path: str  # of the upstream request
    calls: Callable[[bool], bytes]  # the first turn: text (when asked), then two parallel calls
    final: bytes  # the second turn: text (`text_stream`, proven in `test_beyond_text`)
    ids: tuple[str, str] | None  # the calls' ids (None: the gateway makes them)
    arguments: tuple[str, str]  # each call's arguments, concatenated
    history: str  # the body field holding the conversation upstream
    second_turn: Callable[[Calls, bool], list[dict[str, Any]]]  # that field, from the calls sent back


CASES = [
    Case(
        "openai",
        "gpt-4o",
        "/v1/chat/completions",
        openai_calls,
        text_stream("openai", FINAL),
        CALL_IDS,
        (WEATHER_ARGS, TIME_ARGS),
        "messages",
        openai_second_turn,
    ),
    Case(
        "anthropic",
        "claude-sonnet-5-5",
        "/v1/messages",
        anthropic_calls,
        text_stream("anthropic", FINAL),
        TOOLU_IDS,
        (WEATHER_ARGS, TIME_ARGS),
        "messages",
        anthropic_second_turn,
    ),
    Case(
        "gemini",
        "gemini-2.5-flash",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        gemini_calls,
        text_stream("gemini", FINAL),
        None,
        (compact(WEATHER_ARGS), compact(TIME_ARGS)),
        "contents",
        gemini_second_turn,
    ),
    Case(
        "gemini",
        "gemini-3.8-flash",
        "/v1beta/models/gemini-3.8-flash:streamGenerateContent?alt=sse",
        gemini_3_calls,
        text_stream("gemini", FINAL),
        None,
        (compact(WEATHER_ARGS), compact(TIME_ARGS)),
        "contents",
        gemini_second_turn,
    ),
    Case(
        "llama4",
        MAVERICK,
        "/v1/chat/completions",
        together_calls,
        text_stream("llama4", FINAL),
        CALL_IDS,
        (WEATHER_ARGS, TIME_ARGS),
        "messages",
        openai_second_turn,
    ),
]
GATEWAY_ID = re.compile(r"call_[0-9a-f]{24}(\.[A-Za-z0-9_-]+)?")


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[str, ProviderUpstream]]:
    with providers_gateway() as running:
        yield running


@pytest.fixture(params=CASES, ids=["openai", "anthropic", "gemini-2.5", "gemini-3", "llama4"])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


def sdk(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-gateway", max_retries=0)


def assert_two_calls(case: Any, completion: Any) -> None:
    """The completion's one choice: the text before the calls, then both calls exactly."""
    [choice] = completion.choices
    assert (choice.finish_reason, choice.message.content) == ("tool_calls", "Let me check.")
    calls = choice.message.tool_calls or []
    assert [(c.type, c.function.name, c.function.arguments) for c in calls] == [
        ("function", "get_weather", case.arguments[0]),
        ("function", "get_time", case.arguments[1]),
    ]
    assert_ids(case, [c.id for c in calls])


def assert_ids(case: Case, ids: list[str]) -> None:
    if case.ids is None:
        assert all(GATEWAY_ID.fullmatch(i) for i in ids) and len(set(ids)) == 2
        assert ids[0].count(".") == 1 and ids[1].count(".") == 0, "only the signed call carries its signature"
    else:
        assert tuple(ids) == case.ids


def tool_messages(calls: Calls) -> list[dict[str, Any]]:
    """Each call (id, name, arguments) run locally, its result as a `tool` message."""
    return [
        {"role": "tool", "tool_call_id": call_id, "content": LOCAL_TOOLS[name](**json.loads(arguments))}
        for call_id, name, arguments in calls
    ]


def assistant_turn(content: str, calls: Calls) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": content,
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            for call_id, name, arguments in calls
        ],
    }


@pytest.mark.parametrize("lead", [True, False], ids=["text-first", "calls-only"])
def test_the_scripted_streams_are_each_providers_wire(case: Case, lead: bool) -> None:
    """The official SDK of each provider reads the scripted first turn as the same calls."""
    if case.provider in ("openai", "llama4"):
        message = sdk_final(case.calls(lead)).choices[0].message
        calls = [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []]
        no_text = "" if case.provider == "llama4" else None  # Together sends `content: ""` on every delta
        assert (message.content, calls) == (
            "Let me check." if lead else no_text,
            [(case.ids[0], "get_weather", WEATHER_ARGS), (case.ids[1], "get_time", TIME_ARGS)],
        )  # type: ignore[index]
    elif case.provider == "anthropic":
        blocks = sdk_message([case.calls(lead)]).content
        assert [(b.type, getattr(b, "id", None), getattr(b, "input", None)) for b in blocks] == [
            *([("text", None, None)] if lead else []),
            ("tool_use", TOOLU_IDS[0], json.loads(WEATHER_ARGS)),
            ("tool_use", TOOLU_IDS[1], json.loads(TIME_ARGS)),
        ]
    else:
        responses = sdk_stream(case.calls(lead))
        calls = [c for r in responses for c in r.function_calls or []]
        assert [(c.name, c.args) for c in calls] == [
            ("get_weather", json.loads(WEATHER_ARGS)),
            ("get_time", json.loads(TIME_ARGS)),
        ]
        parts = [p for r in responses for p in r.candidates[0].content.parts]
        assert [p.thought_signature for p in parts if p.function_call] == [base64.b64decode(SIGNATURE), None]


# --- /v1 through the official SDK -------------------------------------------------------------


async def test_stream_helper_gets_the_parallel_calls_exactly(gateway: tuple[str, ProviderUpstream], case: Case) -> None:
    url, upstream = gateway
    upstream.script(case.calls())
    async with (
        sdk(url) as client,
        client.chat.completions.stream(
            model=f"{case.provider}/{case.model}", messages=[{"role": "user", "content": QUESTION}], tools=TOOLS
        ) as stream,
    ):
        events = [event async for event in stream]
        completion = await stream.get_final_completion()
    assert_two_calls(case, completion)
    done = [(e.index, e.name, e.arguments) for e in events if e.type == "tool_calls.function.arguments.done"]
    assert done == [(0, "get_weather", case.arguments[0]), (1, "get_time", case.arguments[1])]
    [sent] = upstream.seen
    assert sent.path == case.path


async def test_agent_loop_on_v1(gateway: tuple[str, ProviderUpstream], case: Case) -> None:
    url, upstream = gateway
    upstream.script(case.calls(), case.final)
    messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
    model = f"{case.provider}/{case.model}"
    async with sdk(url) as client:
        async with client.chat.completions.stream(model=model, messages=messages, tools=TOOLS) as stream:
            first = (await stream.get_final_completion()).choices[0].message
        calls = [(c.id, c.function.name, c.function.arguments) for c in first.tool_calls or []]
        messages += [assistant_turn(first.content or "", calls), *tool_messages(calls)]
        final = await client.chat.completions.create(
            model=model, messages=messages, tools=TOOLS, stream=True, stream_options={"include_usage": True}
        )
        chunks = [piece async for piece in final]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(FINAL)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12
    _, second = upstream.seen
    assert second.path == case.path
    assert second.json[case.history] == case.second_turn(calls, True)


async def test_agent_loop_on_v1_sending_back_the_sdks_own_message(
    gateway: tuple[str, ProviderUpstream], case: Case
) -> None:
    """The cookbook's loop: `create` not streamed, a first answer of calls only (`content:
    null`), and the SDK's message object itself appended to the conversation."""
    url, upstream = gateway
    upstream.script(case.calls(False), case.final)
    model = f"{case.provider}/{case.model}"
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    async with sdk(url) as client:
        first = (await client.chat.completions.create(model=model, messages=messages, tools=TOOLS)).choices[0]
        assert (first.finish_reason, first.message.content) == ("tool_calls", None)
        calls = [(c.id, c.function.name, c.function.arguments) for c in first.message.tool_calls or []]
        messages += [first.message, *tool_messages(calls)]
        final = await client.chat.completions.create(model=model, messages=messages, tools=TOOLS)
    assert final.choices[0].message.content == "".join(FINAL)
    _, second = upstream.seen
    assert second.json[case.history] == case.second_turn(calls, False)


async def test_not_streamed_completion_carries_the_calls(gateway: tuple[str, ProviderUpstream], case: Case) -> None:
    url, upstream = gateway
    upstream.script(case.calls())
    async with sdk(url) as client:
        completion = await client.chat.completions.create(
            model=f"{case.provider}/{case.model}",
            messages=[{"role": "user", "content": QUESTION}],
            tools=TOOLS,
            stream=False,
        )
    assert_two_calls(case, completion)
    assert completion.usage is not None and completion.usage.total_tokens == 71


# --- the native endpoint ----------------------------------------------------------------------


def frames(answer: Answer) -> list[tuple[str, dict[str, Any]]]:
    events = [e for e in answer.events if e.data != "[DONE]"]
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
    assert answer.raw.endswith(b"data: [DONE]\n\n")
    return [(e.event, json.loads(e.data)) for e in events]


def calls_of(streamed: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, str, str]]:
    """(id, name, arguments) of each call in `tool_call` frames: a call's first frame
    carries index, id and name; later ones index and an arguments fragment."""
    calls: list[list[str]] = []
    for kind, data in streamed:
        if kind != "tool_call":
            continue
        if "id" in data:
            assert data.keys() == {"index", "id", "name", "arguments"} and data["index"] == len(calls)
            calls.append([data["id"], data["name"], data["arguments"]])
        else:
            assert data.keys() == {"index", "arguments"} and data["index"] == len(calls) - 1
            calls[data["index"]][2] += data["arguments"]
    return [(i, n, a) for i, n, a in calls]


async def test_agent_loop_on_the_native_endpoint(gateway: tuple[str, ProviderUpstream], case: Case) -> None:
    url, upstream = gateway
    upstream.script(case.calls(), case.final)
    messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
    request = {"provider": case.provider, "model": case.model, "tools": TOOLS, "messages": messages}
    async with httpx2.AsyncClient(base_url=url, timeout=10) as client:
        first = Answer(await client.post("/api/v1/chat/stream", json=request))
        streamed = frames(first)
        calls = calls_of(streamed)
        messages += [assistant_turn(first.text, calls), *tool_messages(calls)]
        final = Answer(await client.post("/api/v1/chat/stream", json=request))

    assert first.text == "Let me check."
    assert [(name, arguments) for _, name, arguments in calls] == [
        ("get_weather", case.arguments[0]),
        ("get_time", case.arguments[1]),
    ]
    assert_ids(case, [call_id for call_id, _, _ in calls])
    assert streamed[-1][1]["finish_reason"] == "tool_calls"
    assert [kind for kind, data in streamed if kind == "message" and data["finish_reason"]] == ["message"]
    assert final.text == "".join(FINAL)
    assert final.messages[-1]["finish_reason"] == "stop" and final.messages[-1]["usage"]["completion_tokens"] == 12
    _, second = upstream.seen
    assert second.path == case.path
    assert second.json[case.history] == case.second_turn(calls, True)
    if case.provider == "gemini":
        sdk_request(second.json)  # the body is one the SDK's own types take


async def test_native_whole_answer_carries_the_calls(gateway: tuple[str, ProviderUpstream], case: Case) -> None:
    url, upstream = gateway
    upstream.script(case.calls())
    async with httpx2.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.post(
            "/api/v1/chat",
            json={
                "provider": case.provider,
                "model": case.model,
                "tools": TOOLS,
                "messages": [{"role": "user", "content": QUESTION}],
            },
        )
    answer = response.json()
    calls, usage = answer.pop("tool_calls"), answer.pop("usage")
    assert answer == {
        "content": "Let me check.",
        "finish_reason": "tool_calls",
        "model": case.model,
        "provider": case.provider,
    }
    assert usage.keys() == {"prompt_tokens", "completion_tokens", "total_tokens"} and usage["total_tokens"] == 71
    assert [(c["type"], c["function"]) for c in calls] == [
        ("function", {"name": "get_weather", "arguments": case.arguments[0]}),
        ("function", {"name": "get_time", "arguments": case.arguments[1]}),
    ]
    assert_ids(case, [c["id"] for c in calls])
