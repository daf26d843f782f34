"""The Messages API body a `ChatRequest` becomes (`providers/anthropic_request.py`):
the reasoning table per model family, tools, output format. What the upstream receives
through the gateway is asserted in `test_anthropic_stream.py`; here the mapping itself,
each body checked against the SDK's own request type (`MessageCreateParamsStreaming`)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pydantic
import pytest
from anthropic.types import MessageParam, ToolParam
from anthropic.types.message_create_params import MessageCreateParamsStreaming
from streamgate.chat_types import ChatRequest, chat_request_decoder, json_encoder
from streamgate.errors import InvalidRequestError
from streamgate.providers.anthropic_request import (
    ThinkingForm,
    ThinkingOff,
    WireRequest,
    model_family,
    model_thinking,
    model_version,
)

SDK_BODY = pydantic.TypeAdapter(MessageCreateParamsStreaming)
SDK_MESSAGES = pydantic.TypeAdapter(list[MessageParam])  # `Iterable`s in SDK_BODY are checked lazily
SDK_TOOLS = pydantic.TypeAdapter(list[ToolParam])


def sdk_checked(sent: dict[str, Any]) -> dict[str, Any]:
    """`sent`, after the SDK's request types accepted it (messages and tools included)."""
    SDK_BODY.validate_python(sent)
    SDK_MESSAGES.validate_python(sent["messages"])
    SDK_TOOLS.validate_python(sent.get("tools", []))
    return sent


def body(model: str = "claude-sonnet-5-5", **fields: Any) -> dict[str, Any]:
    """The JSON body sent for a request with `fields`, checked against the SDK's type."""
    request = chat_request_decoder.decode(
        json.dumps({"provider": "anthropic", "messages": [{"role": "user", "content": "Hi"}], **fields})
    )
    return sdk_checked(json.loads(json_encoder.encode(WireRequest.of(request, model))))


def refusal(model: str = "claude-sonnet-5-5", **fields: Any) -> str:
    request: ChatRequest = msgspec.convert({"provider": "anthropic", **fields}, ChatRequest)
    with pytest.raises(InvalidRequestError) as caught:
        WireRequest.of(request, model)
    assert caught.value.status == 422
    return str(caught.value)


@pytest.mark.parametrize(
    ("model", "family", "version", "form", "off"),
    [
        ("claude-sonnet-5-5", "sonnet", (5, 5), ThinkingForm.ADAPTIVE, ThinkingOff.BETWEEN_TOOLS),
        ("claude-sonnet-5", "sonnet", (5, 0), ThinkingForm.ADAPTIVE, ThinkingOff.DISABLED),
        ("claude-opus-5", "opus", (5, 0), ThinkingForm.ADAPTIVE, ThinkingOff.DISABLED),
        ("claude-haiku-5-5", "haiku", (5, 5), ThinkingForm.ADAPTIVE, ThinkingOff.DISABLED),
        ("claude-opus-5-5", "opus", (5, 5), ThinkingForm.ADAPTIVE, ThinkingOff.LOW_EFFORT),
        ("claude-fable-5-2", "fable", (5, 2), ThinkingForm.ADAPTIVE, ThinkingOff.LOW_EFFORT),
        ("claude-opus-4-8", "opus", (4, 8), ThinkingForm.ADAPTIVE, ThinkingOff.LOW_EFFORT),
        ("claude-mythos-preview", "mythos", None, ThinkingForm.ADAPTIVE, ThinkingOff.LOW_EFFORT),
        ("claude-opus-4-6", "opus", (4, 6), ThinkingForm.ADAPTIVE, ThinkingOff.UNSENT),
        ("claude-haiku-4-5-20251001", "haiku", (4, 5), ThinkingForm.BUDGET, ThinkingOff.UNSENT),
        ("claude-sonnet-4-20250514", "sonnet", (4, 0), ThinkingForm.BUDGET, ThinkingOff.UNSENT),
        ("claude-3-7-sonnet-20250219", "sonnet", (3, 7), ThinkingForm.BUDGET, ThinkingOff.UNSENT),
        ("claude-3-5-haiku-20241022", "haiku", (3, 5), ThinkingForm.NONE, ThinkingOff.UNSENT),
        ("claude-3-haiku-20240307", "haiku", (3, 0), ThinkingForm.NONE, ThinkingOff.UNSENT),
    ],
)
def test_thinking_by_model_generation(
    model: str, family: str, version: tuple[int, int] | None, form: ThinkingForm, off: ThinkingOff
) -> None:
    assert (model_family(model), model_version(model)) == (family, version)
    assert model_thinking(model) == (form, off)


@pytest.mark.parametrize(
    ("model", "fields", "thinking", "output_config"),
    [
        (
            "claude-sonnet-5-5",
            {"reasoning_effort": "high", "include_reasoning": True},
            {"type": "adaptive", "display": "summarized"},
            {"effort": "high"},
        ),
        ("claude-sonnet-5-5", {"reasoning_effort": "medium"}, {"type": "adaptive"}, {"effort": "medium"}),
        ("claude-opus-4-6", {"reasoning_effort": "low"}, {"type": "adaptive"}, {"effort": "low"}),
        ("claude-sonnet-5-5", {"reasoning_effort": "minimal"}, {"type": "adaptive"}, {"effort": "low"}),
        ("claude-sonnet-5-5", {"thinking_enabled": True}, {"type": "adaptive"}, None),
        ("claude-sonnet-5-5", {"include_reasoning": True}, {"type": "adaptive", "display": "summarized"}, None),
        ("claude-opus-4-6", {"include_reasoning": True}, None, None),
        ("claude-sonnet-5-5", {"reasoning_effort": "none", "thinking_enabled": True}, {"type": "between_tools"}, None),
        ("claude-sonnet-5", {"reasoning_effort": "none"}, {"type": "disabled"}, None),
        ("claude-haiku-5-5", {"reasoning_effort": "none", "include_reasoning": True}, {"type": "disabled"}, None),
        ("claude-opus-5-5", {"reasoning_effort": "none"}, None, {"effort": "low"}),
        ("claude-mythos-preview", {"reasoning_effort": "none"}, None, {"effort": "low"}),
        ("claude-opus-4-6", {"reasoning_effort": "none"}, None, None),
        ("claude-haiku-4-5", {"reasoning_effort": "high"}, {"type": "enabled", "budget_tokens": 12288}, None),
        ("claude-haiku-4-5", {"reasoning_effort": "minimal"}, {"type": "enabled", "budget_tokens": 1024}, None),
        ("claude-3-7-sonnet-20250219", {"thinking_enabled": True}, {"type": "enabled", "budget_tokens": 8192}, None),
        (
            "claude-haiku-4-5",
            {"reasoning_effort": "high", "max_tokens": 3000},
            {"type": "enabled", "budget_tokens": 2999},
            None,
        ),
        ("claude-haiku-4-5", {"reasoning_effort": "high", "max_tokens": 1024}, None, None),
        ("claude-haiku-4-5", {"reasoning_effort": "none"}, None, None),
        ("claude-haiku-4-5", {"include_reasoning": True}, None, None),
        ("claude-3-haiku-20240307", {"reasoning_effort": "high", "include_reasoning": True}, None, None),
    ],
)
def test_reasoning_maps_to_each_models_thinking(
    model: str, fields: dict[str, Any], thinking: dict[str, Any] | None, output_config: dict[str, Any] | None
) -> None:
    sent = body(model, **fields)
    assert sent.get("thinking") == thinking
    assert sent.get("output_config") == output_config
    assert sent["max_tokens"] == fields.get("max_tokens", 16384)


def test_plain_request_sends_only_what_it_did_before() -> None:
    assert body(temperature=0.3) == {
        "model": "claude-sonnet-5-5",
        "max_tokens": 16384,
        "stream": True,
        "messages": [{"role": "user", "content": "Hi"}],
    }


def test_a_tool_use_continuation_turns_manual_thinking_off() -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18°C"},
    ]
    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    budget = body("claude-haiku-4-5", messages=messages, tools=tools, reasoning_effort="high")
    adaptive = body(messages=messages, tools=tools, reasoning_effort="high", include_reasoning=True)
    assert "thinking" not in budget
    assert adaptive["thinking"] == {"type": "adaptive", "display": "summarized"}, "adaptive thinking takes the turn"
    messages.append({"role": "assistant", "content": "It is 18°C."})
    messages.append({"role": "user", "content": "And tomorrow?"})
    assert body("claude-haiku-4-5", messages=messages, tools=tools, reasoning_effort="high")["thinking"] == {
        "type": "enabled",
        "budget_tokens": 12288,
    }


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
    ],
)
def test_tool_choice(choice: Any, sent: dict[str, Any]) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather now",
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ]
    assert body("claude-haiku-5-5", tools=tools, tool_choice=choice)["tool_choice"] == sent


def test_tools_without_parameters_and_strict_tools() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string", "minLength": 2}}, "required": ["city"]}
    tools = [
        {"type": "function", "function": {"name": "now"}},
        {"type": "function", "function": {"name": "lookup", "parameters": {"properties": {}}}},
        {"type": "function", "function": {"name": "get_weather", "parameters": schema, "strict": True}},
    ]
    assert body(tools=tools)["tools"] == [
        {"name": "now", "input_schema": {"type": "object"}},
        {"name": "lookup", "input_schema": {"type": "object", "properties": {}}},
        {
            "name": "get_weather",
            "strict": True,
            "input_schema": {
                "type": "object",
                "additionalProperties": False,
                "required": ["city"],
                "properties": {"city": {"type": "string", "description": "{minLength: 2}"}},
            },
        },
    ]


@pytest.mark.parametrize("model", ["claude-sonnet-5-5", "claude-opus-5-5", "claude-fable-5-1"])
@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_tool_on_a_model_that_refuses_it_is_422(model: str, choice: Any) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    assert refusal(model, messages=[{"role": "user", "content": "Hi"}], tools=tools, tool_choice=choice) == (
        f"$.tool_choice: {model} cannot be made to call a tool (required or a named tool); use auto"
    )
    assert body(model, tools=tools, tool_choice="auto")["tool_choice"] == {"type": "auto"}


def test_forced_tool_with_manual_thinking_is_refused() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    message = refusal(
        "claude-haiku-4-5",
        messages=[{"role": "user", "content": "Hi"}],
        tools=tools,
        tool_choice="required",
        reasoning_effort="low",
    )
    assert message.startswith("$.tool_choice: anthropic cannot force a tool call with manual extended thinking")
    assert body("claude-haiku-4-5", tools=tools, tool_choice="required", reasoning_effort="none")["tool_choice"] == {
        "type": "any"
    }
    forced = body("claude-sonnet-5", tools=tools, tool_choice="required", reasoning_effort="high")
    assert (forced["tool_choice"], forced["thinking"]) == ({"type": "any"}, {"type": "disabled"})


@pytest.mark.parametrize(
    ("model", "off"),
    [
        ("claude-haiku-5-5", {"thinking": {"type": "disabled"}}),
        ("claude-sonnet-5", {"thinking": {"type": "disabled"}}),
        ("claude-opus-4-6", {}),
        ("claude-next-preview", {"output_config": {"effort": "low"}}),
    ],
)
@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_tool_sends_the_models_thinking_off_form(model: str, off: dict[str, Any], choice: Any) -> None:
    """The API refuses thinking with a forced tool ("Thinking may not be enabled when
    tool_choice forces tool use"): a model that thinks by default, asked through
    `/v1/chat/completions` (which asks for reasoning text), gets its thinking-off form."""
    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    sent = body(model, tools=tools, tool_choice=choice, include_reasoning=True)
    assert {key: sent[key] for key in ("thinking", "output_config") if key in sent} == off


@pytest.mark.parametrize(
    ("response_format", "output_config"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, {"format": {"type": "json_schema", "schema": {"type": "object"}}}),
        (
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "city",
                    "strict": True,
                    "schema": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
                        },
                        "required": ["name"],
                    },
                },
            },
            {
                "format": {
                    "type": "json_schema",
                    "schema": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string"},
                            "tags": {"type": "array", "items": {"type": "string"}, "description": "{maxItems: 3}"},
                        },
                    },
                }
            },
        ),
    ],
)
def test_response_format_is_output_config_format(
    response_format: dict[str, Any], output_config: dict[str, Any] | None
) -> None:
    assert body(response_format=response_format).get("output_config") == output_config


def test_effort_and_format_share_output_config() -> None:
    sent = body(reasoning_effort="low", response_format={"type": "json_object"})
    assert sent["output_config"] == {"effort": "low", "format": {"type": "json_schema", "schema": {"type": "object"}}}


def test_schema_the_subset_cannot_take_is_refused() -> None:
    message = refusal(
        messages=[{"role": "user", "content": "Hi"}],
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"properties": {}}}},
    )
    assert message.startswith("$.response_format.json_schema.schema: anthropic cannot use this schema")


@pytest.mark.parametrize(("stop", "sent"), [("END", ["END"]), (["a", "b"], ["a", "b"])])
def test_stop_is_stop_sequences(stop: Any, sent: list[str]) -> None:
    assert body(stop=stop)["stop_sequences"] == sent


@pytest.mark.parametrize(
    ("arguments", "path"),
    [
        ('{"city": "Par', "$.messages[1].tool_calls[1].function.arguments: not a JSON object"),
        ("[1, 2]", "$.messages[1].tool_calls[1].function.arguments: not a JSON object"),
    ],
)
def test_invalid_call_arguments_are_refused(arguments: str, path: str) -> None:
    calls = [
        {"id": "toolu_1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
        {"id": "toolu_2", "type": "function", "function": {"name": "b", "arguments": arguments}},
    ]
    assert (
        refusal(
            messages=[
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "tool_calls": calls},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "ok"},
            ]
        )
        == path
    )


def test_image_url_that_is_neither_data_nor_https_is_refused() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "http://example.com/cat.png"}},
    ]
    assert refusal(messages=[{"role": "user", "content": content}]) == (
        "$.messages[0].content[1].image_url.url: anthropic takes a data:image/…;base64 URL or an https:// URL"
    )
