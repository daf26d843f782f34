"""The `llama4` adapter end to end: our HTTP API → the real `openai` SDK pointed at
Together → Together's chunk bytes from an `httpx2.MockTransport` upstream."""

from __future__ import annotations

import asyncio
import json
import re
from contextlib import AbstractContextManager
from typing import Any

import httpx2
import openai
import pytest
import support
from streamgate import sse
from streamgate.providers.llama4_stream import SUPPORTED_LLAMA_MODELS, Llama4StreamAdapter
from support import settings
from wire_openai import (
    MockUpstream,
    Reply,
    call_arguments,
    call_start,
    sdk_chunks,
    sdk_final,
    sdk_request_body,
    split,
    sse_body,
)
from wire_together import together_chunk

KEY = "together-test-key-0123456789"
MAVERICK, SCOUT = SUPPORTED_LLAMA_MODELS[:2]
HELLO = {
    "provider": "llama4",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
}
TEXT = ["Bonjour", " le monde", " — ", "こんにちは", " 👋"]


def together_completion(pieces: list[str], finish_reason: str = "eos") -> bytes:
    usage = {"prompt_tokens": 14, "completion_tokens": 5, "total_tokens": 19}
    return sse_body([*(together_chunk(p) for p in pieces), together_chunk("", finish_reason, usage)])


def gateway(upstream: MockUpstream, **overrides: Any) -> AbstractContextManager[str]:
    """Our app serving the `llama4` adapter (over `upstream`'s transport) on 127.0.0.1."""
    http_client = upstream.client()
    return support.gateway(
        lambda config: {"llama4": Llama4StreamAdapter(config, http_client=http_client)},
        **{"together_api_key": KEY, "upstream_max_retries": 0, **overrides},
    )


def post(url: str, body: dict[str, Any] = HELLO) -> httpx2.Response:
    return httpx2.post(url + "/api/v1/chat/stream", json=body, timeout=10)


def messages_of(response: httpx2.Response) -> list[dict[str, Any]]:
    events = [e for e in sse.Decoder().feed(response.content) if isinstance(e, sse.Event)]
    assert events[-1].data == "[DONE]"
    return [json.loads(e.data) for e in events[:-1]]


@pytest.mark.parametrize("piece_size", [1, 10_000])
def test_together_stream_with_eos_and_usage(piece_size: int) -> None:
    upstream = MockUpstream(Reply(200, split(together_completion(TEXT), piece_size)))
    with gateway(upstream) as url:
        response = post(url)
    assert response.status_code == 200
    messages = messages_of(response)
    assert [m["content"] for m in messages] == [*TEXT, ""]
    assert messages[-1] == {
        "content": "",
        "finish_reason": "stop",
        "model": MAVERICK,
        "provider": "llama4",
        "usage": {"prompt_tokens": 14, "completion_tokens": 5, "total_tokens": 19},
    }


def test_what_is_sent_to_together() -> None:
    upstream = MockUpstream(Reply(200, [together_completion(["hi"])]))
    with gateway(upstream) as url:
        post(url, {**HELLO, "model": SCOUT, "temperature": 1.5, "max_tokens": 7})
    (seen,) = upstream.seen
    assert (seen.method, seen.url) == ("POST", "https://api.together.xyz/v1/chat/completions")
    assert seen.json == {
        "model": SCOUT,
        "messages": HELLO["messages"],
        "temperature": 1.5,
        "max_tokens": 7,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert re.fullmatch(r"[0-9a-f]{32}", seen.headers["x-request-id"])


def test_openai_environment_never_reaches_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """The openai SDK reads these for every client it builds; Together must get none."""
    monkeypatch.setenv("OPENAI_ORG_ID", "org-secretorg")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_secretproject")
    monkeypatch.setenv("OPENAI_CUSTOM_HEADERS", "Authorization: Bearer sk-openai-secret\nX-Internal-Team: core")
    upstream = MockUpstream(Reply(200, [together_completion(["hi"])]))
    with gateway(upstream) as url:
        assert post(url).status_code == 200
    (seen,) = upstream.seen
    assert seen.headers.get_list("authorization") == [f"Bearer {KEY}"]
    sent = "\n".join(f"{name}: {value}" for name, value in seen.headers.multi_items())
    for leaked in ("org-secretorg", "proj_secretproject", "sk-openai-secret", "X-Internal-Team"):
        assert leaked.lower() not in sent.lower()
    assert {"user-agent", "x-stainless-lang", "x-stainless-retry-count", "content-type"} <= set(seen.headers.keys())


def test_together_base_url_overrides() -> None:
    upstream = MockUpstream(Reply(200, [together_completion(["hi"])]))
    with gateway(upstream, together_base_url="http://together.internal:9000/v1") as url:
        assert post(url).status_code == 200
    assert upstream.seen[0].url == "http://together.internal:9000/v1/chat/completions"


def test_model_outside_the_list_is_422_without_an_upstream_call() -> None:
    upstream = MockUpstream()
    with gateway(upstream) as url:
        response = post(url, {**HELLO, "model": "meta-llama/Llama-3.3-70B-Instruct-Turbo"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "model_not_supported" and error["provider"] == "llama4"
    assert all(model in error["message"] for model in SUPPORTED_LLAMA_MODELS)
    assert upstream.seen == []


def test_missing_key_is_401_naming_the_variable() -> None:
    upstream = MockUpstream()
    with gateway(upstream, together_api_key=None) as url:
        response = post(url)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "provider_auth_error" and "TOGETHER_API_KEY" in error["message"]
    assert upstream.seen == []


def test_together_401_names_its_key() -> None:
    upstream = MockUpstream(Reply.error(401, "Invalid API key provided. You can find your API key at ..."))
    with gateway(upstream) as url:
        response = post(url)
    assert response.status_code == 401
    assert response.json()["error"] == {
        "type": "provider_auth_error",
        "provider": "llama4",
        "message": "llama4 rejected the API key; check TOGETHER_API_KEY",
    }


def test_models_listed_for_health() -> None:
    upstream = MockUpstream()
    with gateway(upstream) as url:
        health = httpx2.get(url + "/api/v1/chat/stream/health").json()["providers"]["llama4"]
    assert health == {"configured": True, "default_model": MAVERICK, "models": list(SUPPORTED_LLAMA_MODELS)}


# --- today's contract: reasoning, tools, images, stop, structured output, model list --------

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_together_gets_openais_shapes_and_no_reasoning_effort_for_llama_4() -> None:
    """Maverick and Scout do not reason: `reasoning_effort` and `thinking_enabled` send
    nothing. Tools, images, stop and response_format go as the openai SDK sends them."""
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather where this photo was taken?"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRgABAQ=="}},
                {"type": "image_url", "image_url": {"url": "https://upload.example.org/street.jpg"}},
            ],
        },
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "21°C"},
    ]
    fields = {
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "stop": ["<|eot|>", "END"],
        "response_format": {"type": "json_object"},
    }
    upstream = MockUpstream(Reply(200, [together_completion(["{}"])]))
    with gateway(upstream) as url:
        assert (
            post(
                url, {**HELLO, "messages": messages, "reasoning_effort": "high", "thinking_enabled": True, **fields}
            ).status_code
            == 200
        )
    expected = {
        "model": MAVERICK,
        "messages": messages,
        **fields,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert upstream.seen[0].json == expected == sdk_request_body(**expected)


def test_together_tool_calls_stream_as_tool_call_frames() -> None:
    body = sse_body(
        [
            together_chunk("", tool_calls=[call_start(0, "call_kx9", "get_weather")]),
            together_chunk("", tool_calls=[call_arguments(0, '{"city": "Mün')]),
            together_chunk("", tool_calls=[call_arguments(0, 'chen"}')]),
            together_chunk("", "tool_calls", {"prompt_tokens": 80, "completion_tokens": 9, "total_tokens": 89}),
        ]
    )
    final = sdk_final(body)
    assert [(c.id, c.function.arguments) for c in final.choices[0].message.tool_calls or []] == [
        ("call_kx9", '{"city": "München"}')
    ]
    upstream = MockUpstream(Reply(200, split(body, 3)))
    with gateway(upstream) as url:
        frames = [
            (e.event, json.loads(e.data))
            for e in sse.Decoder().feed(post(url, {**HELLO, "tools": [WEATHER_TOOL]}).content)
            if isinstance(e, sse.Event) and e.data != "[DONE]"
        ]
    assert frames == [
        ("tool_call", {"index": 0, "id": "call_kx9", "name": "get_weather", "arguments": ""}),
        ("tool_call", {"index": 0, "arguments": '{"city": "Mün'}),
        ("tool_call", {"index": 0, "arguments": 'chen"}'}),
        (
            "message",
            {
                "content": "",
                "finish_reason": "tool_calls",
                "model": MAVERICK,
                "provider": "llama4",
                "usage": {"prompt_tokens": 80, "completion_tokens": 9, "total_tokens": 89},
            },
        ),
    ]


def test_together_reasoning_delta_streams_as_reasoning_frames_when_asked() -> None:
    body = sse_body(
        [
            together_chunk("", reasoning="Lyon is in France; "),
            together_chunk("", reasoning="answer."),
            together_chunk("Bonjour"),
            together_chunk("", "eos", {"prompt_tokens": 14, "completion_tokens": 9, "total_tokens": 23}),
        ]
    )
    assert [c.choices[0].delta.model_extra["reasoning"] for c in sdk_chunks(body)[:2]] == [  # type: ignore[index]
        "Lyon is in France; ",
        "answer.",
    ]
    upstream = MockUpstream(Reply(200, [body]), Reply(200, [body]))
    with gateway(upstream) as url:
        asked, not_asked = (messages_of(post(url, {**HELLO, "include_reasoning": flag})) for flag in (True, False))
    assert asked[:3] == [
        {"reasoning": "Lyon is in France; ", "model": MAVERICK, "provider": "llama4"},
        {"reasoning": "answer.", "model": MAVERICK, "provider": "llama4"},
        {"content": "Bonjour", "finish_reason": None, "model": MAVERICK, "provider": "llama4", "usage": None},
    ]
    assert [m["content"] for m in not_asked] == ["Bonjour", ""]


def test_default_model_from_settings_must_be_supported() -> None:
    upstream = MockUpstream(Reply(200, [together_completion(["hi"], "stop")]))
    with gateway(upstream, together_default_model=SCOUT) as url:
        messages = messages_of(post(url))
        health = httpx2.get(url + "/api/v1/chat/stream/health").json()["providers"]["llama4"]
    assert upstream.seen[0].json["model"] == SCOUT and messages[-1]["model"] == SCOUT
    assert health["default_model"] == SCOUT and health["models"] == [SCOUT, MAVERICK]
    with pytest.raises(ValueError, match="TOGETHER_DEFAULT_MODEL"):
        Llama4StreamAdapter(settings(together_default_model="meta-llama/Llama-3.3-70B-Instruct-Turbo"))


def together_card(model_id: str, kind: str = "chat") -> dict[str, Any]:
    """One entry of Together's `GET /v1/models`: a bare JSON array of these."""
    return {
        "id": model_id,
        "object": "model",
        "created": 1743877200,
        "type": kind,
        "running": False,
        "display_name": model_id.split("/")[-1],
        "organization": "Meta",
        "link": f"https://huggingface.co/{model_id}",
        "license": "Llama 4 Community License Agreement",
        "context_length": 1048576,
        "config": {"chat_template": None, "stop": ["<|eot|>"], "bos_token": None, "eos_token": None},
        "pricing": {"hourly": 0, "input": 0.18, "output": 0.59, "base": 0, "finetune": 0},
    }


TOGETHER_LIST = [
    together_card("deepseek-ai/DeepSeek-R1"),
    together_card(SCOUT),
    together_card("BAAI/bge-large-en-v1.5", "embedding"),
    together_card(MAVERICK),
]


def test_list_models_reads_togethers_bare_array_without_openais_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_ORG_ID", "org-secretorg")
    monkeypatch.setenv("OPENAI_CUSTOM_HEADERS", "Authorization: Bearer sk-openai-secret\nX-Internal-Team: core")
    body = json.dumps(TOGETHER_LIST).encode()
    upstream = MockUpstream(*(Reply(200, [body], {"content-type": "application/json"}) for _ in range(2)))
    adapter = Llama4StreamAdapter(settings(together_api_key=KEY), http_client=upstream.client())
    assert asyncio.run(adapter.list_models()) == [SCOUT, MAVERICK]
    (seen,) = upstream.seen
    assert (seen.method, seen.url) == ("GET", "https://api.together.xyz/v1/models")
    assert seen.headers.get_list("authorization") == [f"Bearer {KEY}"]
    sent = "\n".join(f"{name}: {value}" for name, value in seen.headers.multi_items())
    assert "secret" not in sent and "x-internal-team" not in sent.lower()

    async def sdk_list() -> None:  # why the adapter does not use `models.list()`
        client = openai.AsyncOpenAI(api_key=KEY, base_url="https://api.together.xyz/v1", http_client=upstream.client())
        await client.models.list()

    with pytest.raises(AttributeError):
        asyncio.run(sdk_list())
