"""Tool calls and reasoning end to end over `echo`: the official `openai` SDK on `/v1`
(its `chat.completions.stream()` helper, `create` streamed and not), and the native
endpoint's `tool_call` / `reasoning` frames — including a whole two-turn agent loop on
each, with no key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest
from streamgate.providers.echo import ARGUMENTS_PIECE, REASONING, EchoAdapter
from support import Answer, gateway

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
ARGUMENTS = '{"city": "Paris – \\"été\\" 🌞"}'
ASK = f"Let me look that up.\n/tool get_weather {ARGUMENTS}"


def get_weather(city: str) -> str:
    """The tool the agent loops run locally."""
    return json.dumps({"city": city, "celsius": 21}, ensure_ascii=False)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with gateway({"echo": EchoAdapter(0)}) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{url}/v1", api_key="sk-anything", max_retries=0) as sdk:
        yield sdk


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# --- /v1 through the SDK --------------------------------------------------------------


def test_stream_helper_accumulates_the_call(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model="echo/echo", messages=user(ASK), tools=[WEATHER]) as stream:
        events = list(stream)
        completion = stream.get_final_completion()

    [choice] = completion.choices
    assert (choice.finish_reason, choice.message.content) == ("tool_calls", "Let me look that up.")
    [call] = choice.message.tool_calls or []
    assert call.id.startswith("call_") and call.type == "function"
    assert (call.function.name, call.function.arguments) == ("get_weather", ARGUMENTS)
    deltas = [e.arguments_delta for e in events if e.type == "tool_calls.function.arguments.delta"]
    pieces = [ARGUMENTS[i : i + ARGUMENTS_PIECE] for i in range(0, len(ARGUMENTS), ARGUMENTS_PIECE)]
    assert deltas == ["", *pieces]  # the call's first delta carries its name and no arguments yet
    [done] = [e for e in events if e.type == "tool_calls.function.arguments.done"]
    assert (done.name, done.index, done.arguments) == ("get_weather", 0, ARGUMENTS)


def test_parallel_calls_on_the_wire(url: str) -> None:
    """`delta.tool_calls`: `index`, then `id`, `type`, `function.name` on a call's first
    delta and `function.arguments` fragments after; the role on the first delta only."""
    ask = '/tool get_time\n/tool get_weather {"city": "Oslo"}'
    response = httpx2.post(
        url + "/v1/chat/completions",
        json={"model": "echo/echo", "stream": True, "messages": user(ask), "tools": [WEATHER, TIME]},
    )
    chunks = [json.loads(line[6:]) for line in response.text.split("\n\n") if line.startswith("data: {")]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0]["role"] == "assistant" and all("role" not in d for d in deltas[1:])
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    firsts = [call for call in calls if "id" in call]
    assert [(c["index"], c["type"], c["function"]["name"], c["function"]["arguments"]) for c in firsts] == [
        (0, "function", "get_time", ""),
        (1, "function", "get_weather", ""),
    ]
    assert all(
        c.keys() == {"index", "function"} and c["function"].keys() == {"arguments"} for c in calls if "id" not in c
    )
    joined = ["".join(c["function"]["arguments"] for c in calls if c["index"] == i) for i in (0, 1)]
    assert joined == ["{}", '{"city": "Oslo"}']
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    assert response.text.endswith("data: [DONE]\n\n")


def test_not_streamed_answer_carries_tool_calls(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="echo/echo", messages=user(f"/tool {ARGUMENTS}"), tools=[WEATHER])
    [choice] = completion.choices
    assert (choice.finish_reason, choice.message.content) == ("tool_calls", None)
    [call] = choice.message.tool_calls or []
    assert (call.type, call.function.name, call.function.arguments) == ("function", "get_weather", ARGUMENTS)


@pytest.mark.parametrize(
    ("tool_choice", "text", "called"),
    [
        ("required", "Weather?", ("get_weather", "{}")),
        ({"type": "function", "function": {"name": "get_time"}}, "What time is it?", ("get_time", "{}")),
        ({"type": "function", "function": {"name": "get_time"}}, '/tool {"tz": "UTC"}', ("get_time", '{"tz": "UTC"}')),
        ("none", "/tool get_weather {}", None),
        ("auto", "Weather?", None),
    ],
)
def test_tool_choice(client: openai.OpenAI, tool_choice: Any, text: str, called: tuple[str, str] | None) -> None:
    completion = client.chat.completions.create(
        model="echo/echo", messages=user(text), tools=[WEATHER, TIME], tool_choice=tool_choice
    )
    message = completion.choices[0].message
    if called is None:
        assert (message.content, message.tool_calls, completion.choices[0].finish_reason) == (text, None, "stop")
    else:
        [call] = message.tool_calls or []
        assert (call.function.name, call.function.arguments) == called


def test_agent_loop_on_v1(client: openai.OpenAI) -> None:
    messages: list[Any] = user(ASK)
    with client.chat.completions.stream(model="echo/echo", messages=messages, tools=[WEATHER]) as stream:
        first = stream.get_final_completion().choices[0].message
    messages.append(first.model_dump(include={"role", "content", "tool_calls"}))
    for call in first.tool_calls or []:
        result = get_weather(**json.loads(call.function.arguments))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": result})

    final = client.chat.completions.create(model="echo/echo", messages=messages, tools=[WEATHER])
    [choice] = final.choices
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    assert choice.message.content == 'get_weather returned: {"city": "Paris – \\"été\\" 🌞", "celsius": 21}'


def test_images_and_developer_role(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="echo/echo",
        messages=[
            {"role": "developer", "content": "Describe images."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in"},
                    {"type": "image_url", "image_url": {"url": "https://x.test/cat.png", "detail": "low"}},
                    {"type": "text", "text": "this picture?"},
                ],
            },
        ],
    )
    assert completion.choices[0].message.content == "What is in\nthis picture?"


def test_reasoning_on_v1(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="echo/echo",
            messages=user("Hi there"),
            stream=True,
            reasoning_effort="low",
            stream_options={"include_usage": True},
        )
    )
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content", "") for c in chunks if c.choices
    )
    assert reasoning == REASONING
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi there"
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert (usage.completion_tokens, usage.completion_tokens_details.reasoning_tokens) == (
        2 + len(REASONING.split()),
        len(REASONING.split()),
    )

    answer = client.chat.completions.create(model="echo/echo", messages=user("Hi there"), reasoning_effort="high")
    assert (answer.choices[0].message.model_extra or {})["reasoning_content"] == REASONING

    hidden = client.chat.completions.create(
        model="echo/echo", messages=user("Hi there"), reasoning_effort="low", extra_body={"include_reasoning": False}
    )
    assert "reasoning_content" not in (hidden.choices[0].message.model_extra or {})
    assert hidden.usage is not None and hidden.usage.completion_tokens_details is not None
    assert hidden.usage.completion_tokens_details.reasoning_tokens == len(REASONING.split())
    for extra in ({"reasoning_effort": "none"}, {}):
        plain = client.chat.completions.create(model="echo/echo", messages=user("Hi there"), **extra)
        assert "reasoning_content" not in (plain.choices[0].message.model_extra or {})
        assert plain.usage is not None and plain.usage.completion_tokens_details is None


# --- the native endpoint --------------------------------------------------------------


def test_agent_loop_on_the_native_endpoint(url: str) -> None:
    request = {"provider": "echo", "messages": user(ASK), "tools": [WEATHER]}
    first = Answer(httpx2.post(url + "/api/v1/chat/stream", json=request))

    frames = [e for e in first.events if e.data != "[DONE]"]
    assert [int(e.id) for e in frames] == list(range(1, len(frames) + 1))
    calls = [json.loads(e.data) for e in first.events if e.event == "tool_call"]
    head, *fragments = calls
    assert head.keys() == {"index", "id", "name", "arguments"} and (head["index"], head["name"]) == (0, "get_weather")
    assert all(f.keys() == {"index", "arguments"} and f["index"] == 0 for f in fragments)
    arguments = "".join(f["arguments"] for f in calls)
    assert arguments == ARGUMENTS
    assert first.text == "Let me look that up." and first.messages[-1]["finish_reason"] == "tool_calls"

    request["messages"] += [
        {
            "role": "assistant",
            "content": first.text,
            "tool_calls": [
                {"id": head["id"], "type": "function", "function": {"name": head["name"], "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": head["id"], "content": get_weather(**json.loads(arguments))},
    ]
    final = httpx2.post(url + "/api/v1/chat", json=request).json()
    assert final == {
        "content": 'get_weather returned: {"city": "Paris – \\"été\\" 🌞", "celsius": 21}',
        "finish_reason": "stop",
        "model": "echo",
        "provider": "echo",
        "tool_calls": None,
        "usage": {"prompt_tokens": 24, "completion_tokens": 9, "total_tokens": 33},
    }  # words, echo's tokens


def test_native_not_streamed_tool_calls(url: str) -> None:
    answer = httpx2.post(
        url + "/api/v1/chat",
        json={"provider": "echo", "messages": user("/tool get_time\n/tool get_weather {}"), "tools": [WEATHER, TIME]},
    ).json()
    assert (answer["content"], answer["finish_reason"]) == ("", "tool_calls")
    assert [(c["type"], c["function"]) for c in answer["tool_calls"]] == [
        ("function", {"name": "get_time", "arguments": "{}"}),
        ("function", {"name": "get_weather", "arguments": "{}"}),
    ]
    assert len({c["id"] for c in answer["tool_calls"]}) == 2


def test_native_reasoning(url: str) -> None:
    request = {"provider": "echo", "messages": user("Hi there"), "include_reasoning": True, "thinking_enabled": True}
    streamed = Answer(httpx2.post(url + "/api/v1/chat/stream", json=request))
    kinds = [e.event for e in streamed.events if e.data != "[DONE]"]
    words = len(REASONING.split())
    assert kinds == ["reasoning"] * words + ["message"] * 3
    assert "".join(json.loads(e.data)["reasoning"] for e in streamed.events if e.event == "reasoning") == REASONING
    assert streamed.text == "Hi there"
    assert streamed.messages[-1]["usage"] == {
        "prompt_tokens": 2,
        "completion_tokens": 2 + words,
        "total_tokens": 4 + words,
        "reasoning_tokens": words,
    }

    answer = httpx2.post(url + "/api/v1/chat", json=request).json()
    assert (answer["content"], answer["reasoning"]) == ("Hi there", REASONING)
    unasked = httpx2.post(url + "/api/v1/chat", json={**request, "include_reasoning": False}).json()
    assert "reasoning" not in unasked and unasked["usage"]["reasoning_tokens"] == words


def test_tool_lines_without_tools_are_text(url: str) -> None:
    text = "/tool get_weather {}\nplain"
    answer = httpx2.post(url + "/api/v1/chat", json={"provider": "echo", "messages": user(text)}).json()
    assert (answer["content"], answer["tool_calls"], answer["finish_reason"]) == (text, None, "stop")


def test_arguments_may_span_lines(url: str) -> None:
    ask = '/tool get_weather {\n  "city": "Rome"\n}\n/tool get_time'
    answer = httpx2.post(
        url + "/api/v1/chat", json={"provider": "echo", "messages": user(ask), "tools": [WEATHER, TIME]}
    ).json()
    assert [c["function"] for c in answer["tool_calls"]] == [
        {"name": "get_weather", "arguments": '{\n  "city": "Rome"\n}'},
        {"name": "get_time", "arguments": "{}"},
    ]
