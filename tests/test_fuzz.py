"""Random and adversarial bodies at both chat endpoints (Hypothesis): a client's mistake is
never a 5xx, every refusal is the contract's JSON error, and nothing logs a traceback.

Bodies are the contract's full request with fields replaced by random JSON values or
removed, plus what a hostile client sends: deep nesting, huge numbers, `NaN`, invalid
UTF-8, truncated JSON, random bytes; and, to the providers that read JSON out of strings
or transform schemas (Anthropic, Gemini), deeply nested JSON as tool arguments and tool
results and type lists in strict schemas.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from streamgate.app import create_app
from streamgate.providers.echo import EchoAdapter
from support import closed_port, serve, settings

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ],
    },
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
    {"role": "user", "content": "Hello there"},
]
RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
}
NATIVE = {
    "messages": MESSAGES,
    "provider": "echo",
    "model": "echo",
    "temperature": 0.7,
    "max_tokens": 64,
    "thinking_enabled": False,
    "reasoning_effort": "low",
    "include_reasoning": False,
    "stop": ["END"],
    "response_format": RESPONSE_FORMAT,
    "tools": TOOLS,
    "tool_choice": "auto",
    "resumable": False,
}
V1 = {
    "messages": MESSAGES,
    "model": "echo/echo",
    "stream": True,
    "stream_options": {"include_usage": True},
    "temperature": 0.7,
    "max_completion_tokens": 64,
    "reasoning_effort": "low",
    "stop": ["END"],
    "response_format": RESPONSE_FORMAT,
    "tools": TOOLS,
    "tool_choice": "auto",
}

#: The contract's error types (and on `/v1` the OpenAI dialect's own codes).
ERROR_TYPES = {
    "invalid_json",
    "invalid_request",
    "unknown_provider",
    "model_not_supported",
    "provider_auth_error",
    "body_too_large",
    "unauthorized",
    "forbidden_origin",
    "invalid_host",
    "rate_limited",
    "upstream_error",
    "upstream_timeout",
}
V1_CODES = ERROR_TYPES | {"provider_not_configured", "model_not_found", "unsupported_parameter"}

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**20, max_value=10**400)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["", "user", "tool", "function", "text", "image_url", "json_schema", "auto", "HIGH"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=6) | st.sampled_from(["type", "role", "name"]), inner, max_size=3)
    ),
    max_leaves=8,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON value, as the keys and indexes that lead to it."""
    yield prefix
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from paths(child, (*prefix, key))


@st.composite
def mutated(draw: st.DrawFn, template: dict[str, Any]) -> bytes:
    """`template` with one to three places replaced by a random JSON value or removed."""
    body: Any = copy.deepcopy(template)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(paths(body))))
        if not path:
            body = draw(json_values)
            continue
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return json.dumps(body).encode()


@st.composite
def hostile(draw: st.DrawFn, template: dict[str, Any]) -> bytes:
    """What no library client sends but a hostile one may."""
    valid = json.dumps(template).encode()
    kind = draw(st.sampled_from(["deep", "number", "nan", "utf8", "truncated", "bytes"]))
    if kind == "deep":
        depth = draw(st.integers(1, 5000))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        nested = opener * depth + b"1" + closer * depth
        return nested if draw(st.booleans()) else valid[:-1] + b',"extra":' + nested + b"}"
    if kind == "number":
        number = draw(st.sampled_from([b"1" + b"0" * 400, b"1e999", b"-1e999", b"1e-999", b"-0", b"1.5e308"]))
        field = draw(st.sampled_from([b"temperature", b"max_tokens", b"max_completion_tokens", b"extra"]))
        return valid[:-1] + b',"' + field + b'":' + number + b"}"
    if kind == "nan":
        token = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"nan"]))
        return valid.replace(b"0.7", token)
    if kind == "utf8":
        at = draw(st.integers(0, len(valid)))
        return valid[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"])) + valid[at:]
    if kind == "truncated":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    return draw(st.binary(max_size=64))


class Tracebacks(logging.Handler):
    """Every log record at ERROR or above, or carrying an exception."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[httpx.Client, Tracebacks]]:
    handler = Tracebacks()
    loggers = [logging.getLogger(name) for name in ("", "streamgate", "uvicorn", "uvicorn.error")]
    with serve(create_app(settings(echo_delay_ms=0.0), adapters={"echo": EchoAdapter(0)})) as url:
        for logger in loggers:
            logger.addHandler(handler)
        try:
            with httpx.Client(base_url=url, timeout=10) as client:
                yield client, handler
        finally:
            for logger in loggers:
                logger.removeHandler(handler)


def answer_of(client: httpx.Client, path: str, body: bytes, tracebacks: Tracebacks) -> dict[str, Any] | None:
    """POST `body`; assert no 5xx and no traceback; the error object of a refusal, else None."""
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code < 500, (body[:300], response.text)
    assert not tracebacks.records, [record.getMessage() for record in tracebacks.records]
    if response.status_code == 200:
        assert (
            response.content.rstrip().endswith(b"data: [DONE]")
            or response.headers["content-type"] == "application/json"
        )
        return None
    assert response.headers["content-type"] == "application/json"
    return response.json()["error"]  # type: ignore[no-any-return]


FUZZ = hypothesis_settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(body=mutated(NATIVE) | hostile(NATIVE))
def test_native_endpoint_never_fails_a_client(gateway: tuple[httpx.Client, Tracebacks], body: bytes) -> None:
    client, tracebacks = gateway
    error = answer_of(client, "/api/v1/chat/stream", body, tracebacks)
    if error is not None:
        assert set(error) <= {"type", "message", "provider"} and error["type"] in ERROR_TYPES, error
        assert isinstance(error["message"], str) and error["message"]


@FUZZ
@given(body=mutated(V1) | hostile(V1))
def test_openai_endpoint_never_fails_a_client(gateway: tuple[httpx.Client, Tracebacks], body: bytes) -> None:
    client, tracebacks = gateway
    error = answer_of(client, "/v1/chat/completions", body, tracebacks)
    if error is not None:
        assert set(error) == {"message", "type", "param", "code"} and error["code"] in V1_CODES, error
        assert isinstance(error["message"], str) and error["message"]


# --- JSON inside strings, and schemas, on the providers that read them ----------------------

PROVIDERS = ("anthropic", "gemini", "openai", "echo")


@pytest.fixture(scope="module")
def providers_gateway() -> Iterator[tuple[httpx.Client, Tracebacks]]:
    """Every provider configured against a closed port: what the gateway refuses, it
    refuses before any upstream call; what it accepts ends as `could not connect`."""
    handler = Tracebacks()
    loggers = [logging.getLogger(name) for name in ("", "streamgate", "uvicorn", "uvicorn.error")]
    nowhere = f"http://127.0.0.1:{closed_port()}"
    config = settings(
        openai_api_key="sk-fuzz",
        anthropic_api_key="sk-ant-fuzz",
        gemini_api_key="AIza-fuzz",
        openai_base_url=nowhere + "/v1",
        anthropic_base_url=nowhere,
        gemini_base_url=nowhere,
        upstream_max_retries=0,
    )
    with serve(create_app(config)) as url:
        for logger in loggers:
            logger.addHandler(handler)
        try:
            with httpx.Client(base_url=url, timeout=10) as client:
                yield client, handler
        finally:
            for logger in loggers:
                logger.removeHandler(handler)


@st.composite
def nested_json_text(draw: st.DrawFn) -> str:
    """JSON text nested up to 3,000 deep (objects, arrays or both), whole or cut short."""
    depth = draw(st.integers(1, 3000))
    kind = draw(st.sampled_from(["objects", "arrays", "both"]))
    opener, closer = {"objects": ('{"a":', "}"), "arrays": ("[", "]"), "both": ('{"a":[', "]}")}[kind]
    text = opener * depth + "1" + closer * depth
    return text[: draw(st.integers(0, len(text)))] if draw(st.booleans()) else text


schema_types = st.lists(st.sampled_from(["string", "null", "integer", "object", "array"]), min_size=1, max_size=3)


@st.composite
def strings_that_hold_json(draw: st.DrawFn, template: dict[str, Any], v1: bool) -> bytes:
    """`template` sent to a provider that reads JSON out of strings or transforms schemas:
    deep JSON as a tool call's arguments or a tool's result, a type list in a (strict) schema."""
    body: Any = copy.deepcopy(template)
    provider = draw(st.sampled_from(PROVIDERS))
    if v1:
        body["model"] = {
            "echo": "echo/echo",
            "openai": "openai/gpt-4o",
            "anthropic": "anthropic/claude-sonnet-4-5",
            "gemini": "gemini/gemini-2.5-flash",
        }[provider]
    else:
        body["provider"] = provider
        body.pop("model")
    for place in draw(
        st.lists(
            st.sampled_from(["arguments", "result", "tool_schema", "format_schema"]),
            min_size=1,
            max_size=4,
            unique=True,
        )
    ):
        if place == "arguments":
            body["messages"][2]["tool_calls"][0]["function"]["arguments"] = draw(nested_json_text())
        elif place == "result":
            body["messages"][3]["content"] = draw(nested_json_text())
        elif place == "tool_schema":
            function = body["tools"][0]["function"]
            function["strict"] = True
            function["parameters"]["properties"]["city"]["type"] = draw(schema_types)
        else:
            body["response_format"]["json_schema"]["schema"] = {
                "type": "object",
                "properties": {"answer": {"type": draw(schema_types)}},
            }
    return json.dumps(body).encode()


def provider_answer_of(client: httpx.Client, path: str, body: bytes, tracebacks: Tracebacks) -> dict[str, Any] | None:
    """As `answer_of`, but the closed upstream's `502 could not connect` is the answer of a
    request the gateway accepted."""
    tracebacks.records.clear()  # this body's own (Hypothesis then shrinks to the body at fault)
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert not tracebacks.records, [record.getMessage() for record in tracebacks.records]
    if response.status_code == 200:
        return None
    error: dict[str, Any] = response.json()["error"]
    if response.status_code >= 500:
        assert response.status_code == 502 and error["message"].startswith("could not connect"), (body[:300], error)
    return error


@FUZZ
@given(body=strings_that_hold_json(NATIVE, v1=False))
def test_json_inside_strings_is_never_a_5xx_on_the_native_endpoint(
    providers_gateway: tuple[httpx.Client, Tracebacks], body: bytes
) -> None:
    client, tracebacks = providers_gateway
    error = provider_answer_of(client, "/api/v1/chat/stream", body, tracebacks)
    if error is not None:
        assert error["type"] in ERROR_TYPES, error


@FUZZ
@given(body=strings_that_hold_json(V1, v1=True))
def test_json_inside_strings_is_never_a_5xx_on_the_openai_endpoint(
    providers_gateway: tuple[httpx.Client, Tracebacks], body: bytes
) -> None:
    client, tracebacks = providers_gateway
    error = provider_answer_of(client, "/v1/chat/completions", body, tracebacks)
    if error is not None:
        assert error["code"] in V1_CODES, error


def test_the_reviews_bodies_are_the_contracts_errors(providers_gateway: tuple[httpx.Client, Tracebacks]) -> None:
    """The review's three: deep JSON as tool arguments (Anthropic, Gemini) and as a tool
    result (Gemini), and a strict Anthropic schema with `"type": ["string", "null"]`."""
    client, tracebacks = providers_gateway
    deep = '{"a":' * 1500 + "1" + "}" * 1500
    for provider in ("anthropic", "gemini"):
        body: Any = copy.deepcopy({**NATIVE, "provider": provider})
        body.pop("model")
        body["messages"][2]["tool_calls"][0]["function"]["arguments"] = deep
        error = provider_answer_of(client, "/api/v1/chat/stream", json.dumps(body).encode(), tracebacks)
        assert error is not None and error["type"] == "invalid_request" and "arguments" in error["message"], error
    body = copy.deepcopy({**NATIVE, "provider": "gemini"})
    body.pop("model")
    body["messages"][3]["content"] = deep  # a tool's output: passed on as text
    error = provider_answer_of(client, "/api/v1/chat/stream", json.dumps(body).encode(), tracebacks)
    assert error is not None and error["message"].startswith("could not connect"), error
    body = copy.deepcopy({**NATIVE, "provider": "anthropic"})
    body.pop("model")
    body["tools"][0]["function"]["strict"] = True
    body["tools"][0]["function"]["parameters"]["properties"]["city"]["type"] = ["string", "null"]
    error = provider_answer_of(client, "/api/v1/chat/stream", json.dumps(body).encode(), tracebacks)
    assert error is not None and error["type"] == "invalid_request" and "anyOf" in error["message"], error
