"""`/v1/chat/completions`, `/v1/models` and `/v1/models/{model}`, driven by the official
`openai` SDK as the client against the app on a real loopback server."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import msgspec
import openai
import pytest
from streamgate import app as server
from streamgate.adapter import ChunkStream
from streamgate.catalog import Catalog
from streamgate.chat_types import ChatRequest, StreamChunk, chat_request_decoder
from streamgate.dialects.openai_chat import CompletionRequest, completion_request_decoder, to_chat_request
from streamgate.errors import GatewayError, RateLimitedError, UpstreamError
from streamgate.providers import build_adapters
from streamgate.providers.anthropic_stream import AnthropicStreamAdapter
from streamgate.providers.echo import EchoAdapter
from streamgate.providers.openai_stream import OpenAIStreamAdapter
from support import serve, settings
from wire_openai import MockUpstream, Reply, chunk, completion, split, sse_body

TEXT = "Héllo there,\nstreaming wörld 🌍"
USER = [{"role": "user", "content": TEXT}]


class BrokenAdapter:
    """A real adapter of the `Adapter` protocol whose upstream fails: before it accepts
    the request (`fail_before`), or after the first chunk of text."""

    name = "broken"
    default_model = "m1"
    configured = True
    models = ("m1", "m2")

    def __init__(self, fail_before: GatewayError | None = None) -> None:
        self.fail_before = fail_before

    async def stream_chat(self, request: ChatRequest) -> ChunkStream:
        if self.fail_before is not None:
            raise self.fail_before
        return ChunkStream(self._chunks(request.model or self.default_model))

    async def _chunks(self, model: str) -> AsyncGenerator[StreamChunk, None]:
        yield StreamChunk("Hello ", None, model, self.name)
        raise UpstreamError("the upstream reset the connection", provider=self.name)

    async def aclose(self) -> None:
        return None


class UnconfiguredAdapter(BrokenAdapter):
    name = "off"
    configured = False


def echo_app(**overrides: object):  # type: ignore[no-untyped-def]
    adapters = {"echo": EchoAdapter(0), "broken": BrokenAdapter(), "off": UnconfiguredAdapter()}
    return server.create_app(settings(**overrides), adapters)


@contextmanager
def sdk_client(app, api_key: str = "sk-anything") -> Iterator[openai.OpenAI]:  # type: ignore[no-untyped-def]
    with serve(app) as url, openai.OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def client() -> Iterator[openai.OpenAI]:
    with sdk_client(echo_app()) as sdk:
        yield sdk


# --- streaming ------------------------------------------------------------------------


def test_stream_without_include_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="echo/echo", messages=USER, stream=True))

    assert "".join(c.choices[0].delta.content or "" for c in chunks) == TEXT
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert len({c.created for c in chunks}) == 1
    assert {(c.object, c.model) for c in chunks} == {("chat.completion.chunk", "echo/echo")}
    assert [c.choices[0].delta.role for c in chunks] == ["assistant"] + [None] * (len(chunks) - 1)
    assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]
    assert all(len(c.choices) == 1 and c.usage is None for c in chunks)  # no usage chunk unasked


def test_stream_with_include_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="echo/echo", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )

    *choice_chunks, usage_chunk = chunks
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.model_dump(exclude_none=True) == {
        "prompt_tokens": 5,
        "completion_tokens": 5,
        "total_tokens": 10,
    }
    assert usage_chunk.id == choice_chunks[0].id
    assert all(c.usage is None and len(c.choices) == 1 for c in choice_chunks)
    assert "".join(c.choices[0].delta.content or "" for c in choice_chunks) == TEXT
    assert choice_chunks[-1].choices[0].finish_reason == "stop"
    assert choice_chunks[-1].choices[0].delta.content is None


def test_stream_wire_bytes(client: openai.OpenAI) -> None:
    """The exact frames: `data:` lines only, the role in the first delta, `[DONE]` last."""
    response = client.chat.completions.with_raw_response.create(
        model="echo/echo",
        messages=[{"role": "user", "content": "Hi you"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    body = response.http_response.read()
    assert response.http_response.headers["content-type"].startswith("text/event-stream")
    frames = body.split(b"\n\n")
    assert frames[-2:] == [b"data: [DONE]", b""]
    first = msgspec.json.decode(frames[0].removeprefix(b"data: "))
    head = b'data: {"id":"%s","object":"chat.completion.chunk","created":%d,"model":"echo/echo","choices":[' % (
        first["id"].encode(),
        first["created"],
    )
    assert frames[:-2] == [
        head + b'{"index":0,"delta":{"role":"assistant","content":"Hi "},"finish_reason":null}]}',
        head + b'{"index":0,"delta":{"content":"you"},"finish_reason":null}]}',
        head + b'{"index":0,"delta":{},"finish_reason":"stop"}]}',
        head + b'],"usage":{"prompt_tokens":2,"completion_tokens":2,"total_tokens":4}}',
    ]


# --- not streaming --------------------------------------------------------------------


def test_not_streaming(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="echo/echo", messages=USER)

    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "echo/echo"
    [choice] = completion.choices
    assert (choice.index, choice.message.role, choice.message.content, choice.finish_reason) == (
        0,
        "assistant",
        TEXT,
        "stop",
    )
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (
        5,
        5,
        10,
    )


def test_text_parts_developer_role_and_ignored_fields(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="echo/echo",
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        ],
        n=1,
        top_p=0.5,
        seed=7,
        user="u-1",
        logprobs=False,
        response_format={"type": "text"},
        extra_body={"some_future_field": {"x": 1}},
    )
    assert completion.choices[0].message.content == "one\ntwo"


# --- errors before the upstream accepted ----------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"functions": [{"name": "f", "parameters": {"type": "object"}}]}, "functions"),
        ({"function_call": {"name": "f"}}, "function_call"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is this?"},
                            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                        ],
                    }
                ]
            },
            "messages[0].content[1].type",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]},
            "messages[0].content[0].type",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "function", "name": "f", "content": "42"}]},
            "messages[1].role",
        ),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_unsupported_field_is_refused(client: openai.OpenAI, fields: dict, param: str, stream: bool) -> None:
    request = {"model": "echo/echo", "messages": USER, "stream": stream, **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**request)
    error = caught.value
    assert error.status_code == 400
    assert isinstance(error.body, dict) and error.body.keys() == {"message", "type", "param", "code"}
    assert error.body["message"].startswith(f"$.{param}: ")
    assert (error.param, error.code, error.type) == (param, "unsupported_parameter", "invalid_request_error")


@pytest.mark.parametrize("model", ["anthropic/claude-sonnet-4-20250514", "gpt-4o"])
def test_unknown_provider(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model, messages=USER, stream=True)
    error = caught.value
    assert (error.status_code, error.code, error.type, error.param) == (
        400,
        "unknown_provider",
        "invalid_request_error",
        "model",
    )
    assert model in error.body["message"] and "echo, broken, off" in error.body["message"]  # type: ignore[index]


def test_model_not_supported_passes_through(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="echo/other", messages=USER)
    assert (caught.value.code, caught.value.type, caught.value.param) == (
        "model_not_supported",
        "invalid_request_error",
        "model",
    )


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "only a system message"}]}, "messages"),
        ({"messages": [{"role": "narrator", "content": "x"}]}, "messages[0].role"),
        ({"model": "echo/"}, "model"),
    ],
)
def test_invalid_request(client: openai.OpenAI, fields: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**{"model": "echo/echo", "messages": USER, **fields})
    assert (caught.value.code, caught.value.type, caught.value.param) == (
        "invalid_request",
        "invalid_request_error",
        param,
    )


def test_invalid_json_is_400_in_openai_shape(client: openai.OpenAI) -> None:
    response = httpx2.post(
        f"{client.base_url}chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_json", None)


def test_rate_limit_before_first_token() -> None:
    adapters = {"broken": BrokenAdapter(fail_before=RateLimitedError("broken rate limit: slow down", retry_after="7"))}
    with sdk_client(server.create_app(settings(), adapters)) as sdk:
        for stream in (True, False):
            with pytest.raises(openai.RateLimitError) as caught:
                sdk.chat.completions.create(model="broken/m1", messages=USER, stream=stream)
            error = caught.value
            assert (error.status_code, error.code, error.type) == (429, "rate_limited", "rate_limit_error")
            assert error.response.headers["retry-after"] == "7"
            assert error.body == {
                "message": "broken rate limit: slow down",
                "type": "rate_limit_error",
                "param": None,
                "code": "rate_limited",
            }


# --- errors after the first token -----------------------------------------------------


def test_error_after_first_token_raises_while_iterating(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="broken/m1", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    received: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert received == ["Hello "]
    error = caught.value
    assert not isinstance(error, openai.APIStatusError)  # raised from the stream, after the 200
    assert error.message == "the upstream reset the connection"
    assert (error.code, error.type) == ("upstream_error", "api_error")


def test_error_after_first_token_wire_bytes(client: openai.OpenAI) -> None:
    """One `data: {"error": ...}` line and the end: no `[DONE]` that could hide it."""
    response = httpx2.post(
        f"{client.base_url}chat/completions", json={"model": "broken/m1", "messages": USER, "stream": True}
    )
    assert response.status_code == 200
    frames = response.content.split(b"\n\n")
    assert frames[-2:] == [
        b'data: {"error":{"message":"the upstream reset the connection","type":"api_error",'
        b'"param":null,"code":"upstream_error"}}',
        b"",
    ]
    assert len(frames) == 3 and b"[DONE]" not in response.content


def test_error_after_first_token_not_streaming(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="broken/m1", messages=USER)
    assert (caught.value.status_code, caught.value.code, caught.value.type) == (502, "upstream_error", "api_error")


# --- models and auth ------------------------------------------------------------------


def test_models_list(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models] == ["echo/echo", "broken/m1", "broken/m2"]  # `off` is not configured
    assert {(m.object, m.owned_by) for m in models} == {("model", "echo"), ("model", "broken")}


def test_models_retrieve_a_listed_model(client: openai.OpenAI) -> None:
    listed = {m.id: m for m in client.models.list()}
    for model_id in ("echo/echo", "broken/m2"):
        model = client.models.retrieve(model_id)
        assert model.model_dump(exclude_none=True) == {
            "id": model_id,
            "object": "model",
            "created": listed[model_id].created,
            "owned_by": model_id.partition("/")[0],
        }


LLAMA = "llama4/meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8"


def test_models_retrieve_an_id_with_slashes() -> None:
    """The SDK sends the id's `/`s as `%2F`; a raw `/` reaches the same model."""
    llama = settings(together_api_key="tg-upstream")
    with sdk_client(server.create_app(llama, build_adapters(llama))) as sdk:
        model = sdk.models.retrieve(LLAMA)
        raw = httpx2.get(f"{sdk.base_url}models/{LLAMA}")
    assert (model.id, model.object, model.owned_by) == (LLAMA, "model", "llama4")
    assert raw.status_code == 200
    assert raw.json() == {"id": LLAMA, "created": model.created, "owned_by": "llama4", "object": "model"}


@pytest.mark.parametrize("model_id", ["gpt-4o", "off/m1", "echo/echo/extra"])
def test_models_retrieve_an_unknown_id(client: openai.OpenAI, model_id: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve(model_id)
    error = caught.value
    assert error.status_code == 404
    assert error.body == {
        "message": f"the model {model_id!r} does not exist on this gateway; GET /v1/models lists the ids it serves",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    assert (error.code, error.type, error.param) == ("model_not_found", "invalid_request_error", "model")


def test_gateway_api_key() -> None:
    with sdk_client(echo_app(gateway_api_key="gw-secret"), api_key="wrong") as sdk:
        for call in (
            sdk.models.list,
            lambda: sdk.models.retrieve("echo/echo"),
            lambda: sdk.chat.completions.create(model="echo/echo", messages=USER, stream=True),
        ):
            with pytest.raises(openai.AuthenticationError) as caught:
                call()
            assert (caught.value.status_code, caught.value.code, caught.value.type) == (
                401,
                "unauthorized",
                "authentication_error",
            )
        native = httpx2.post(f"{sdk.base_url}".replace("/v1/", "/api/v1/chat"), json={})
        assert native.status_code == 401 and native.json()["error"]["type"] == "unauthorized"
        good = sdk.with_options(api_key="gw-secret")
        assert [m.id for m in good.models.list()][0] == "echo/echo"
        assert good.models.retrieve("echo/echo").id == "echo/echo"
        completion = good.chat.completions.create(model="echo/echo", messages=USER)
        assert completion.choices[0].message.content == TEXT


# --- translation (pure functions) -----------------------------------------------------


def test_to_chat_request() -> None:
    body = (
        b'{"model":"x","messages":[{"role":"developer","content":"d"},{"role":"user","content":"u"},'
        b'{"role":"assistant","content":null,"name":"bot"}],"max_tokens":10,"max_completion_tokens":20,'
        b'"temperature":0,"unknown":[1]}'
    )
    request: CompletionRequest = completion_request_decoder.decode(body)
    chat = to_chat_request(request, "anthropic", "claude-x")
    assert msgspec.to_builtins(chat) == {
        "messages": [
            {"role": "system", "content": "d"},
            {"role": "user", "content": "u"},
            {"role": "assistant", "content": ""},
        ],
        "provider": "anthropic",
        "model": "claude-x",
        "temperature": 0.0,
        "max_tokens": 20,
        "thinking_enabled": False,
        "reasoning_effort": None,
        "include_reasoning": True,
        "stop": None,
        "response_format": None,
        "tools": None,
        "tool_choice": None,
        "resumable": False,
        "top_p": None,
    }
    one = b'{"model":"x","messages":[{"role":"user","content":"u"}]'
    defaults = to_chat_request(completion_request_decoder.decode(one + b"}"), "echo", "echo")
    assert (defaults.temperature, defaults.max_tokens) == (None, None)  # not asked for: none sent
    only_max_tokens = completion_request_decoder.decode(one + b',"max_tokens":5}')
    assert to_chat_request(only_max_tokens, "echo", "echo").max_tokens == 5


AGENT_TURN = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "21 °C"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather.",
                "parameters": {"type": "object", "properties": {}},
                "strict": True,
            },
        }
    ],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "stop": ["\n\n"],
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    },
    "reasoning_effort": "low",
    "temperature": 0.5,
    "max_completion_tokens": 99,
    "resumable": True,
}


def test_to_chat_request_is_the_native_request() -> None:
    """Every field OpenAI and the native endpoint share decodes to the same `ChatRequest`."""
    v1 = completion_request_decoder.decode(msgspec.json.encode({"model": "m", **AGENT_TURN}))
    native = {**AGENT_TURN, "provider": "openai", "model": "m", "max_tokens": 99, "include_reasoning": True}
    del native["max_completion_tokens"]
    expected = chat_request_decoder.decode(msgspec.json.encode(native))
    assert msgspec.to_builtins(to_chat_request(v1, "openai", "m")) == msgspec.to_builtins(expected)
    v1_off = completion_request_decoder.decode(
        msgspec.json.encode({"model": "m", **AGENT_TURN, "include_reasoning": False})
    )
    assert to_chat_request(v1_off, "openai", "m").include_reasoning is False


def test_a_plain_request_keeps_its_decoded_messages() -> None:
    """No copy for a plain text request: the decoded messages are the request's."""
    request = completion_request_decoder.decode(
        b'{"model":"x","messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}]}'
    )
    decoded = list(request.messages)
    chat = to_chat_request(request, "echo", "echo")
    assert all(a is b for a, b in zip(chat.messages, decoded, strict=True))


# --- openai-routed: the `openai` adapter over OpenAI's wire bytes ---------------------

OPENAI_PIECES = ["Hel", "lo, ", "世界", " 🙂\nbye"]


@contextmanager
def openai_routed(*replies: Reply) -> Iterator[tuple[openai.OpenAI, MockUpstream]]:
    upstream = MockUpstream(*replies)
    config = settings(
        openai_api_key="sk-upstream", openai_base_url="https://openai.upstream.test/v1", upstream_max_retries=0
    )
    adapters = {"openai": OpenAIStreamAdapter(config, http_client=upstream.client())}
    with sdk_client(server.create_app(config, adapters, catalog=Catalog(adapters, refresh_s=None))) as sdk:
        yield sdk, upstream


@pytest.mark.parametrize("model", ["gpt-4o", "openai/gpt-4o"])
def test_openai_routed_stream_with_usage(model: str) -> None:
    with openai_routed(Reply(200, split(completion(OPENAI_PIECES, usage=(9, 12)), 7))) as (sdk, upstream):
        chunks = list(
            sdk.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "Hi"}],
                stream=True,
                max_completion_tokens=50,
                temperature=0.2,
                stream_options={"include_usage": True},
            )
        )
    *choice_chunks, usage_chunk = chunks
    assert "".join(c.choices[0].delta.content or "" for c in choice_chunks) == "".join(OPENAI_PIECES)
    assert {c.model for c in chunks} == {model} and len({c.id for c in chunks}) == 1
    assert choice_chunks[-1].choices[0].finish_reason == "stop"
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert (usage_chunk.usage.prompt_tokens, usage_chunk.usage.completion_tokens) == (9, 12)
    [seen] = upstream.seen
    assert (
        seen.json["model"] == "gpt-4o" and seen.json["max_completion_tokens"] == 50 and seen.json["temperature"] == 0.2
    )
    assert seen.json["messages"] == [{"role": "user", "content": "Hi"}]


def test_openai_routed_stream_without_usage_and_not_streamed() -> None:
    replies = [Reply(200, [completion(OPENAI_PIECES, finish_reason="length")]) for _ in range(2)]
    with openai_routed(*replies) as (sdk, _):
        chunks = list(sdk.chat.completions.create(model="gpt-4o", messages=USER, stream=True))
        answer = sdk.chat.completions.create(model="gpt-4o", messages=USER)
    assert all(c.usage is None and len(c.choices) == 1 for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(OPENAI_PIECES)
    assert chunks[-1].choices[0].finish_reason == "length"
    assert answer.choices[0].message.content == "".join(OPENAI_PIECES)
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.total_tokens == 21


def test_openai_routed_errors_before_and_after_the_first_token() -> None:
    truncated = Reply(200, [sse_body([chunk(role="assistant"), chunk("Hel")], done=False)])
    limited = Reply.error(429, "Rate limit reached", {"retry-after": "3"})
    with openai_routed(limited, truncated) as (sdk, _):
        with pytest.raises(openai.RateLimitError) as before:
            sdk.chat.completions.create(model="gpt-4o", messages=USER, stream=True)
        stream = sdk.chat.completions.create(model="gpt-4o", messages=USER, stream=True)
        received = []
        with pytest.raises(openai.APIError) as after:
            for chunk_ in stream:
                received.append(chunk_.choices[0].delta.content)
    assert (before.value.status_code, before.value.code) == (429, "rate_limited")
    assert before.value.response.headers["retry-after"] == "3"
    assert received == ["Hel"]
    assert after.value.code == "upstream_error" and "without a finish reason" in after.value.message


def test_readme_example_runs_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## Use it from the OpenAI SDK") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    with serve(server.create_app(settings(), {"echo": EchoAdapter(0)})) as url:
        exec(compile(match.group(1).replace("http://127.0.0.1:8000", url), "README.md", "exec"), {})  # noqa: S102
    assert capsys.readouterr().out == "Hello there, streaming world\n8 tokens\nHi\n['echo/echo']\necho\n"


# --- anthropic-routed: the `anthropic` adapter over Anthropic's wire bytes ------------


def anthropic_event(name: str, data: dict) -> bytes:
    return b"event: %b\ndata: %b\n\n" % (name.encode(), msgspec.json.encode({"type": name, **data}))


def anthropic_stream(pieces: list[str], stop_reason: str = "end_turn", *, fail: bool = False) -> bytes:
    """A Messages API stream as Anthropic sends it (or, with `fail`, one cut by an
    `overloaded_error` after the first text delta)."""
    message = {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-sonnet-4-20250514",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 1},
    }
    deltas = [
        anthropic_event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
        for piece in pieces
    ]
    head = [
        anthropic_event("message_start", {"message": message}),
        anthropic_event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        anthropic_event("ping", {}),
    ]
    if fail:
        error = anthropic_event("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
        return b"".join([*head, deltas[0], error])
    tail = [
        anthropic_event("content_block_stop", {"index": 0}),
        anthropic_event(
            "message_delta",
            {"delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": {"output_tokens": 15}},
        ),
        anthropic_event("message_stop", {}),
    ]
    return b"".join([*head, *deltas, *tail])


@contextmanager
def anthropic_routed(*bodies: bytes) -> Iterator[tuple[openai.OpenAI, list[dict]]]:
    replies = list(bodies)
    seen: list[dict] = []

    async def upstream(request: httpx2.Request) -> httpx2.Response:
        seen.append(msgspec.json.decode(request.content))
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=replies.pop(0))

    config = settings(anthropic_api_key="sk-ant-upstream", upstream_max_retries=0)
    http_client = httpx2.AsyncClient(transport=httpx2.MockTransport(upstream))
    adapters = {"anthropic": AnthropicStreamAdapter(config, http_client=http_client)}
    with sdk_client(server.create_app(config, adapters, catalog=Catalog(adapters, refresh_s=None))) as sdk:
        yield sdk, seen


ANTHROPIC_PIECES = ["Bonjour", ", 世界", " 🎉\nfin"]
CLAUDE = "anthropic/claude-sonnet-4-20250514"


@pytest.mark.filterwarnings("ignore:The model 'claude-sonnet-4-20250514' is deprecated")
def test_anthropic_routed_stream_and_not_streamed() -> None:
    bodies = [
        anthropic_stream(ANTHROPIC_PIECES),
        anthropic_stream(ANTHROPIC_PIECES, "max_tokens"),
        anthropic_stream(ANTHROPIC_PIECES),
    ]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    with anthropic_routed(*bodies) as (sdk, seen):
        with_usage = list(
            sdk.chat.completions.create(
                model=CLAUDE, messages=messages, stream=True, max_tokens=64, stream_options={"include_usage": True}
            )
        )
        without_usage = list(sdk.chat.completions.create(model=CLAUDE, messages=messages, stream=True))
        answer = sdk.chat.completions.create(model=CLAUDE, messages=messages)

    *choice_chunks, usage_chunk = with_usage
    assert "".join(c.choices[0].delta.content or "" for c in choice_chunks) == "".join(ANTHROPIC_PIECES)
    assert choice_chunks[0].choices[0].delta.role == "assistant"
    assert choice_chunks[-1].choices[0].finish_reason == "stop"
    assert {c.model for c in with_usage} == {CLAUDE} and len({c.id for c in with_usage}) == 1
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert (usage_chunk.usage.prompt_tokens, usage_chunk.usage.completion_tokens, usage_chunk.usage.total_tokens) == (
        25,
        15,
        40,
    )
    assert all(c.usage is None and len(c.choices) == 1 for c in without_usage)
    assert without_usage[-1].choices[0].finish_reason == "length"
    assert answer.choices[0].message.content == "".join(ANTHROPIC_PIECES)
    assert answer.usage is not None and answer.usage.total_tokens == 40
    assert seen[0]["model"] == "claude-sonnet-4-20250514" and seen[0]["max_tokens"] == 64
    assert seen[0]["system"] == "Be brief." and seen[0]["messages"] == [{"role": "user", "content": "Hi"}]


@pytest.mark.filterwarnings("ignore:The model 'claude-sonnet-4-20250514' is deprecated")
def test_anthropic_routed_error_after_the_first_token() -> None:
    with anthropic_routed(anthropic_stream(ANTHROPIC_PIECES, fail=True)) as (sdk, _):
        stream = sdk.chat.completions.create(model=CLAUDE, messages=USER, stream=True)
        received = []
        with pytest.raises(openai.APIError) as caught:
            for chunk_ in stream:
                received.append(chunk_.choices[0].delta.content)
    assert received == ["Bonjour"]
    assert not isinstance(caught.value, openai.APIStatusError)
    assert caught.value.code == "upstream_error" and "Overloaded" in caught.value.message
