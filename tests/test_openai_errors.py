"""`/v1` errors as OpenAI's own API answers them, read by the official SDK's exception
classes: what the gateway refuses as malformed is a 400 (`BadRequestError`), a provider
without a key a 400 `provider_not_configured` naming the variable; the native endpoint
keeps its statuses (422, 401 `provider_auth_error`)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from streamgate.app import create_app
from support import gateway, serve, settings

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with gateway() as url:  # every provider, none configured but echo
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=base_url + "/v1", api_key="-", max_retries=0) as sdk:
        yield sdk


@pytest.mark.parametrize(
    ("model", "variable"),
    [
        ("gpt-4o", "OPENAI_API_KEY"),
        ("anthropic/claude-x", "ANTHROPIC_API_KEY"),
        ("gemini/gemini-2.5-flash", "GEMINI_API_KEY"),
        ("llama4/meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8", "TOGETHER_API_KEY"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_a_provider_without_a_key_is_a_400_naming_the_variable(
    client: openai.OpenAI, base_url: str, model: str, variable: str, stream: bool
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model, messages=HELLO, stream=stream)
    error = caught.value
    assert (error.status_code, error.code, error.type, error.param) == (
        400,
        "provider_not_configured",
        "invalid_request_error",
        None,
    )
    message = error.body["message"]  # type: ignore[index]
    assert message.endswith(f"is not configured; set {variable}")
    provider = model.partition("/")[0] if "/" in model else "openai"
    native = httpx.post(base_url + "/api/v1/chat/stream", json={"provider": provider, "messages": HELLO})
    assert native.status_code == 401
    assert native.json() == {"error": {"type": "provider_auth_error", "provider": provider, "message": message}}


@pytest.mark.parametrize(
    ("fields", "code", "param"),
    [
        ({"max_tokens": 0}, "invalid_request", "max_tokens"),
        ({"model": "echo/other"}, "model_not_supported", "model"),
        ({"temperature": 3}, "invalid_request", "temperature"),
        ({"messages": [{"role": "narrator", "content": "x"}]}, "invalid_request", "messages[0].role"),
    ],
)
def test_what_the_gateway_refuses_as_malformed_is_a_400(
    client: openai.OpenAI, base_url: str, fields: dict, code: str, param: str
) -> None:
    request = {"model": "echo/echo", "messages": HELLO, **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**request)
    error = caught.value
    assert (error.status_code, error.code, error.type, error.param) == (400, code, "invalid_request_error", param)
    native = {"provider": "echo", "messages": request["messages"], **{k: v for k, v in fields.items() if k != "model"}}
    if "model" in fields:
        native["model"] = fields["model"].partition("/")[2]
    assert httpx.post(base_url + "/api/v1/chat/stream", json=native).status_code == 422


def test_the_gateways_own_key_is_still_a_401() -> None:
    with serve(create_app(settings(gateway_api_key="right"))) as url:
        with openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0) as sdk:
            with pytest.raises(openai.AuthenticationError) as caught:
                sdk.chat.completions.create(model="echo/echo", messages=HELLO)
    assert (caught.value.status_code, caught.value.code) == (401, "unauthorized")
