"""Images, `stop` and structured output for each provider, through the official `openai`
SDK on `/v1` and through the native endpoint: the whole body each upstream received, in
its own form, read back by that provider's SDK types; and the documented refusal of an
image the contract does not take, before any upstream call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest
from support import Answer
from test_anthropic_request import sdk_checked
from wire_anthropic import sdk_message
from wire_gemini import sdk_request, sdk_stream
from wire_openai import sdk_chunks, sdk_request_body
from wire_together import MAVERICK
from wire_upstreams import ProviderUpstream, providers_gateway, text_stream

MODELS = {"openai": "gpt-4o", "anthropic": "claude-sonnet-5-5", "gemini": "gemini-2.5-flash", "llama4": MAVERICK}
PROVIDERS = list(MODELS)
ENDPOINTS = ["v1", "native"]
ANSWER = ['{"city": "Par', 'is", "celsius": 18.5}']

#: A real 1×1 PNG, and an image on the web the provider fetches itself.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
PHOTO = "https://upload.example.org/photos/cat.jpg"
IMAGE_MESSAGES = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in these images?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": PHOTO, "detail": "low"}},
        ],
    }
]
HELLO = [{"role": "user", "content": "Weather in Paris as JSON."}]
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "celsius": {"type": "number"}},
    "required": ["city", "celsius"],
    "additionalProperties": False,
}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True}}


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[str, ProviderUpstream]]:
    with providers_gateway() as running:
        yield running


def ask(url: str, endpoint: str, provider: str, messages: list[dict[str, Any]], **fields: Any) -> str:
    """One streamed request; the answer's text."""
    if endpoint == "v1":
        with openai.OpenAI(base_url=f"{url}/v1", api_key="sk-gateway", max_retries=0) as client:
            stream = client.chat.completions.create(
                model=f"{provider}/{MODELS[provider]}", messages=messages, stream=True, **fields
            )
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    answer = Answer(
        httpx2.post(
            f"{url}/api/v1/chat/stream", json={"provider": provider, "messages": messages, **fields}, timeout=10
        )
    )
    assert answer.status == 200
    return answer.text


def upstream_body(
    provider: str, endpoint: str, messages: list[dict[str, Any]] | None = None, **fields: Any
) -> dict[str, Any]:
    """The whole body `provider`'s upstream gets for `HELLO` (or `messages`) with `fields`
    in its own form (OpenAI and Together: as sent; Anthropic: the Messages API; Gemini:
    `generateContent`)."""
    if provider in ("openai", "llama4"):
        return {
            "model": MODELS[provider],
            "messages": messages or HELLO,
            "stream": True,
            "stream_options": {"include_usage": True},
            **fields,
        }
    if provider == "anthropic":
        body = {"model": MODELS[provider], "max_tokens": 16384, "messages": messages or HELLO, "stream": True, **fields}
        if endpoint == "v1":  # `/v1` asks for reasoning by default: Sonnet 5.5 thinks, summarized
            body["thinking"] = {"type": "adaptive", "display": "summarized"}
        return body
    contents = messages or [{"role": "user", "parts": [{"text": HELLO[0]["content"]}]}]
    return {"contents": contents, "generationConfig": {"thinkingConfig": {"thinkingBudget": 0}, **fields}}


def sdk_takes(provider: str, body: dict[str, Any]) -> None:
    """The body is one the provider's own SDK sends or reads."""
    if provider in ("openai", "llama4"):
        assert sdk_request_body(**body) == body
    elif provider == "anthropic":
        sdk_checked(body)
    else:
        sdk_request(body)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_scripted_answers_are_each_providers_wire(provider: str) -> None:
    """`text_stream` (the answers these tests script) read by each provider's own SDK."""
    body = text_stream(provider, ANSWER)
    if provider in ("openai", "llama4"):
        chunks = sdk_chunks(body)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = next(c.usage for c in chunks if c.usage is not None)
        counts = (usage.prompt_tokens, usage.completion_tokens)
    elif provider == "anthropic":
        message = sdk_message([body])
        text = "".join(block.text for block in message.content)  # type: ignore[union-attr]
        counts = (message.usage.input_tokens, message.usage.output_tokens)
    else:
        responses = sdk_stream(body)
        text = "".join(r.text or "" for r in responses)
        metadata = responses[-1].usage_metadata
        counts = (metadata.prompt_token_count, metadata.candidates_token_count)  # type: ignore[union-attr]
    assert (text, counts) == ("".join(ANSWER), (9, 12))


def sent(upstream: ProviderUpstream) -> dict[str, Any]:
    [request] = upstream.seen
    return request.json


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_images_reach_each_provider_in_its_own_form(
    gateway: tuple[str, ProviderUpstream], provider: str, endpoint: str
) -> None:
    url, upstream = gateway
    upstream.script(text_stream(provider, ["A red dot and a cat."]))
    assert ask(url, endpoint, provider, IMAGE_MESSAGES) == "A red dot and a cat."
    question = "What is in these images?"
    messages = {
        "anthropic": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": question},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                    {"type": "image", "source": {"type": "url", "url": PHOTO}},
                ],
            }
        ],
        "gemini": [
            {
                "role": "user",
                "parts": [
                    {"text": question},
                    {"inlineData": {"mimeType": "image/png", "data": PNG}},
                    {"fileData": {"fileUri": PHOTO, "mimeType": "image/jpeg"}},
                ],
            }
        ],
    }.get(provider, IMAGE_MESSAGES)
    body = sent(upstream)
    assert body == upstream_body(provider, endpoint, messages)
    sdk_takes(provider, body)


NOT_TAKEN = [
    ("http://upload.example.org/cat.jpg", "send a data:image/(png|jpeg|gif|webp);base64,… URL or an https:// URL"),
    ("data:image/bmp;base64,Qk0=", "send a data:image/(png|jpeg|gif|webp);base64,… URL or an https:// URL"),
]
IMAGE_PART = "$.messages[0].content[1].image_url.url"


def not_taken(url: str) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [{"type": "text", "text": "This?"}, {"type": "image_url", "image_url": {"url": url}}],
        }
    ]


@pytest.mark.parametrize(("url", "problem"), NOT_TAKEN, ids=["http", "bmp"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_image_the_contract_does_not_take_is_422_naming_the_part(
    gateway: tuple[str, ProviderUpstream], provider: str, url: str, problem: str
) -> None:
    base_url, upstream = gateway
    upstream.script()
    native = httpx2.post(f"{base_url}/api/v1/chat/stream", json={"provider": provider, "messages": not_taken(url)})
    assert native.status_code == 422
    assert native.json()["error"]["type"] == "invalid_request"
    assert native.json()["error"]["message"].startswith(f"{IMAGE_PART}: {problem}")
    assert upstream.seen == []


@pytest.mark.parametrize(("url", "problem"), NOT_TAKEN, ids=["http", "bmp"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_image_the_contract_does_not_take_is_a_bad_request_on_v1(
    gateway: tuple[str, ProviderUpstream], provider: str, url: str, problem: str
) -> None:
    base_url, upstream = gateway
    upstream.script()
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-gateway", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=f"{provider}/{MODELS[provider]}", messages=not_taken(url))  # type: ignore[arg-type]
    error = refused.value
    assert (error.status_code, error.code, error.param) == (400, "invalid_request", IMAGE_PART[2:])
    assert error.body["message"].startswith(f"{IMAGE_PART}: {problem}")  # type: ignore[index]
    assert upstream.seen == []


STOPS = [("END", ["END"]), (["\n\nUser:", "END", "停"], ["\n\nUser:", "END", "停"])]


@pytest.mark.parametrize(("stop", "sequences"), STOPS, ids=["string", "list"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_stop_is_each_providers_stop_sequences(
    gateway: tuple[str, ProviderUpstream], provider: str, endpoint: str, stop: str | list[str], sequences: list[str]
) -> None:
    url, upstream = gateway
    upstream.script(text_stream(provider, ["Sunny"]))
    assert ask(url, endpoint, provider, HELLO, stop=stop) == "Sunny"
    field = {"anthropic": {"stop_sequences": sequences}, "gemini": {"stopSequences": sequences}}.get(
        provider, {"stop": stop}
    )
    body = sent(upstream)
    assert body == upstream_body(provider, endpoint, **field)
    sdk_takes(provider, body)


#: Each `response_format` and what each provider gets for it (OpenAI and Together: as sent).
FORMATS = {
    "json_schema": (
        JSON_SCHEMA,
        {
            "anthropic": {"output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}},
            "gemini": {"responseMimeType": "application/json", "responseJsonSchema": SCHEMA},
        },
    ),
    "json_object": (
        {"type": "json_object"},
        {
            "anthropic": {"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
            "gemini": {"responseMimeType": "application/json"},
        },
    ),
}


@pytest.mark.parametrize("kind", list(FORMATS))
@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_response_format_is_each_providers_structured_output(
    gateway: tuple[str, ProviderUpstream], provider: str, endpoint: str, kind: str
) -> None:
    url, upstream = gateway
    upstream.script(text_stream(provider, ANSWER))
    response_format, controls = FORMATS[kind]
    assert ask(url, endpoint, provider, HELLO, response_format=response_format) == '{"city": "Paris", "celsius": 18.5}'
    body = sent(upstream)
    assert body == upstream_body(provider, endpoint, **controls.get(provider, {"response_format": response_format}))
    sdk_takes(provider, body)
