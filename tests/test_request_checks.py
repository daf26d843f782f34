"""`request_checks`: what both endpoints refuse before any upstream call, over real HTTP.

Each case is a request fragment; the native endpoint answers `422` with the exact body,
`/v1` the same message in OpenAI's error shape (`code: invalid_request`, `param` the
field).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from streamgate import app as server
from streamgate.providers.echo import EchoAdapter
from streamgate.request_checks import MAX_IMAGE_BYTES
from support import gateway, serve, settings

USER = {"role": "user", "content": "What is the weather in Paris?"}
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
ASSISTANT_CALL = {"role": "assistant", "content": None, "tool_calls": [CALL]}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(64)).decode()


def image(url: str, role: str = "user") -> dict[str, Any]:
    return {
        "messages": [
            {
                "role": role,
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ]
    }


def schema_format(json_schema: dict[str, Any] | None) -> dict[str, Any]:
    response_format: dict[str, Any] = {"type": "json_schema"}
    if json_schema is not None:
        response_format["json_schema"] = json_schema
    return {"response_format": response_format}


BAD_URL = "send a data:image/(png|jpeg|gif|webp);base64,… URL or an https:// URL"

#: (request fragment, the message naming the field)
REFUSED: list[tuple[dict[str, Any], str]] = [
    (
        {"tools": [{"type": "function", "function": {"name": "get weather"}}]},
        "$.tools[0].function.name: Expected `str` matching regex '^[A-Za-z0-9_-]{1,64}$'",
    ),
    (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
        '$.tools[0].function.parameters.type: must be "object" (a JSON Schema object)',
    ),
    (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        '$.tools[0].function.parameters.type: must be "object" (a JSON Schema object)',
    ),
    (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
        "$.tools[0].function.parameters: Expected `object | null`, got `array`",
    ),
    ({"tools": [TOOL, TOOL]}, "$.tools[1].function.name: 'get_weather' is defined twice"),
    ({"tools": []}, "$.tools: an empty list; send at least one tool, or omit it"),
    ({"tool_choice": "auto"}, "$.tool_choice: given without tools; send tools too, or omit it"),
    (
        {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "get_time"}}},
        "$.tool_choice.function.name: 'get_time' is not one of the tools (get_weather)",
    ),
    (
        {"tools": [TOOL], "tool_choice": "always"},
        "$.tool_choice: Invalid enum value 'always'; valid: auto, none, required",
    ),
    (
        {
            "messages": [
                USER,
                {
                    "role": "assistant",
                    "tool_calls": [{**CALL, "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
                },
            ]
        },
        "$.messages[1].tool_calls[0].function.arguments: Expected `str`, got `object`",
    ),
    (
        {"messages": [USER, {"role": "tool", "tool_call_id": "call_9", "content": "21 °C"}]},
        "$.messages[1].tool_call_id: 'call_9' answers no earlier assistant tool call",
    ),
    (
        {"messages": [USER, {"role": "tool", "tool_call_id": "call_1", "content": "21 °C"}, ASSISTANT_CALL]},
        "$.messages[1].tool_call_id: 'call_1' answers no earlier assistant tool call",
    ),
    (
        {"messages": [USER, ASSISTANT_CALL, {"role": "tool", "content": "21 °C"}]},
        "$.messages[2].tool_call_id: required for role 'tool'",
    ),
    ({"messages": [{**USER, "tool_call_id": "call_1"}]}, "$.messages[0].tool_call_id: only tool messages carry one"),
    (
        {"messages": [{**USER, "tool_calls": [CALL]}]},
        "$.messages[0].tool_calls: only assistant messages carry tool calls",
    ),
    (
        {"messages": [USER, ASSISTANT_CALL, {"role": "assistant", "tool_calls": [CALL]}]},
        "$.messages[2].tool_calls[0].id: 'call_1' is used by an earlier call",
    ),
    (
        {"messages": [USER, {"role": "assistant", "tool_calls": [{**CALL, "id": ""}]}]},
        "$.messages[1].tool_calls[0].id: is empty",
    ),
    (
        image(f"data:image/png;base64,{PNG}", role="system"),
        "$.messages[0].content[1]: image parts are allowed in user messages only",
    ),
    (
        {"messages": [USER, image(f"data:image/png;base64,{PNG}", role="assistant")["messages"][0]]},
        "$.messages[1].content[1]: image parts are allowed in user messages only",
    ),
    (image(f"data:image/svg+xml;base64,{PNG}"), f"$.messages[0].content[1].image_url.url: {BAD_URL}"),
    (image(f"data:image/PNG;base64,{PNG}"), f"$.messages[0].content[1].image_url.url: {BAD_URL}"),
    (image("http://example.com/cat.png"), f"$.messages[0].content[1].image_url.url: {BAD_URL}"),
    (image("file:///etc/passwd"), f"$.messages[0].content[1].image_url.url: {BAD_URL}"),
    (image("https:///cat.png"), "$.messages[0].content[1].image_url.url: an https URL needs a host"),
    (
        image("data:image/png;base64,@@@@"),
        "$.messages[0].content[1].image_url.url: the data URL's base64 does not decode",
    ),
    (
        image("data:image/png;base64,iVBORw0KGgo"),  # no padding
        "$.messages[0].content[1].image_url.url: the data URL's base64 does not decode",
    ),
    (
        image("data:image/png;base64,iVBO RwAA"),
        "$.messages[0].content[1].image_url.url: the data URL's base64 does not decode",
    ),
    (image("data:image/png;base64,"), "$.messages[0].content[1].image_url.url: the data URL holds no image"),
    (
        {"messages": [{"role": "user", "content": []}]},
        "$.messages[0].content: an empty list of parts; send at least one",
    ),
    (schema_format(None), "$.response_format.json_schema: required for type 'json_schema'"),
    (schema_format({"name": "answer"}), "$.response_format.json_schema.schema: required field is missing"),
    (
        schema_format({"name": "an answer", "schema": {"type": "object"}}),
        "$.response_format.json_schema.name: 1 to 64 letters, digits, underscores or dashes",
    ),
    (schema_format({"schema": {"type": "object"}}), "$.response_format.json_schema.name: required field is missing"),
    (
        {"response_format": {"type": "xml"}},
        "$.response_format.type: Invalid enum value 'xml'; valid: json_object, json_schema, text",
    ),
    ({"stop": ""}, "$.stop: Expected `str` of length >= 1"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "$.stop: Expected `array` of length <= 4"),
    ({"stop": ["a", ""]}, "$.stop[1]: Expected `str` of length >= 1"),
    (
        {"messages": [{"role": "system", "content": "Be brief."}]},
        "$.messages: at least one message must be user, assistant or tool",
    ),
]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with gateway({"echo": EchoAdapter(0)}) as base_url:
        yield base_url


def native(fragment: dict[str, Any]) -> dict[str, Any]:
    return {"provider": "echo", "messages": [USER], **fragment}


def openai_shaped(fragment: dict[str, Any]) -> dict[str, Any]:
    return {"model": "echo/echo", "messages": [USER], **fragment}


@pytest.mark.parametrize(("fragment", "message"), REFUSED)
@pytest.mark.parametrize("path", ["/api/v1/chat/stream", "/api/v1/chat"])
def test_native_refuses(url: str, path: str, fragment: dict[str, Any], message: str) -> None:
    response = httpx2.post(url + path, json=native(fragment))
    assert (response.status_code, response.json()) == (422, {"error": {"type": "invalid_request", "message": message}})


@pytest.mark.parametrize(("fragment", "message"), REFUSED)
def test_v1_refuses(url: str, fragment: dict[str, Any], message: str) -> None:
    response = httpx2.post(url + "/v1/chat/completions", json={**openai_shaped(fragment), "stream": True})
    assert response.status_code in (400, 422)  # 422 today; 400 (BadRequestError) with the /v1 status mapping
    param = message[2:].partition(":")[0]
    assert response.json() == {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": "invalid_request"}
    }


def test_native_assistant_needs_content_or_calls(url: str) -> None:
    """`/v1` reads an assistant's `content: null` as no text (OpenAI's habit); the native
    endpoint, whose contract says so, needs content unless the message carries calls."""
    fragment = {"messages": [USER, {"role": "assistant", "content": None}, USER]}
    response = httpx2.post(url + "/api/v1/chat/stream", json=native(fragment))
    assert (response.status_code, response.json()) == (
        422,
        {"error": {"type": "invalid_request", "message": "$.messages[1].content: required field is missing"}},
    )
    assert httpx2.post(url + "/v1/chat/completions", json=openai_shaped(fragment)).status_code == 200


def test_an_image_over_the_limit_is_refused_before_decoding() -> None:
    limit = MAX_IMAGE_BYTES // 3 * 4
    oversized = "A" * (limit + 8)
    body_cap = limit + 4096
    with serve(server.create_app(settings(max_body_bytes=body_cap), {"echo": EchoAdapter(0)})) as base_url:
        response = httpx2.post(base_url + "/api/v1/chat", json=native(image(f"data:image/webp;base64,{oversized}")))
        at_limit = httpx2.post(base_url + "/api/v1/chat", json=native(image(f"data:image/webp;base64,{'A' * limit}")))
    assert (response.status_code, response.json()["error"]["message"]) == (
        422,
        f"$.messages[0].content[1].image_url.url: the image is over {MAX_IMAGE_BYTES} bytes",
    )
    assert (at_limit.status_code, at_limit.json()["content"]) == (200, "What is this?")


ACCEPTED: list[dict[str, Any]] = [
    image(f"data:image/png;base64,{PNG}"),
    image("data:image/jpeg;base64,/9j/4AAQ"),
    image("https://example.com/cat.png?size=large"),
    {
        "tools": [TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "messages": [USER, ASSISTANT_CALL, {"role": "tool", "tool_call_id": "call_1", "content": "21 °C"}],
    },
    {"tools": [{"type": "function", "function": {"name": "now"}}], "tool_choice": "none"},
    schema_format({"name": "answer", "schema": {"type": "object"}, "strict": True}),
    {"response_format": {"type": "json_object"}, "stop": ["\n\n", "END"]},
]


@pytest.mark.parametrize("fragment", ACCEPTED)
def test_accepted_on_both_endpoints(url: str, fragment: dict[str, Any]) -> None:
    assert httpx2.post(url + "/api/v1/chat", json=native(fragment)).status_code == 200
    assert httpx2.post(url + "/v1/chat/completions", json=openai_shaped(fragment)).status_code == 200
