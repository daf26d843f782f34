"""`providers.stainless`: the exceptions the real openai and anthropic SDKs raise (over
an `httpx2.MockTransport` upstream) mapped to the contract's errors, and the prepared
request that opens a stream only on a `2xx`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from anthropic._models import FinalRequestOptions as AnthropicOptions
from openai._models import FinalRequestOptions as OpenAIOptions
from streamgate import sse
from streamgate.errors import GatewayError
from streamgate.providers.stainless import AnthropicRequest, OpenAIRequest, map_sdk_error, map_transport_error

KEY = "sk-secret-0123456789"
Handler = Callable[[httpx2.Request], httpx2.Response]


def error_reply(status: int, message: str, headers: dict[str, str] | None = None) -> Handler:
    body = json.dumps({"type": "error", "error": {"type": "some_error", "message": message}})
    return lambda request: httpx2.Response(status, headers=headers, content=body)


def failing(exc: type[httpx2.TransportError]) -> Handler:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise exc("boom", request=request)

    return handler


def sdk_client(sdk: str, handler: Handler) -> Any:
    http_client = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    if sdk == "openai":
        return openai.AsyncOpenAI(
            api_key=KEY, base_url="https://upstream.test/v1", max_retries=0, http_client=http_client
        )
    return anthropic.AsyncAnthropic(
        api_key=KEY, base_url="https://upstream.test", max_retries=0, http_client=http_client
    )


def map_error(sdk: str, exc: BaseException) -> GatewayError:
    module: Any = openai if sdk == "openai" else anthropic
    return map_sdk_error(
        exc,
        provider=sdk,
        key_env=f"{sdk.upper()}_API_KEY",
        status_error=module.APIStatusError,
        timeout_error=module.APITimeoutError,
        connection_error=module.APIConnectionError,
    )


async def sdk_error(sdk: str, handler: Handler) -> GatewayError:
    """Call the real SDK against `handler` and map what it raises."""
    http_client = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    try:
        if sdk == "openai":
            async with openai.AsyncOpenAI(api_key=KEY, max_retries=0, http_client=http_client) as client:
                await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        else:
            async with anthropic.AsyncAnthropic(api_key=KEY, max_retries=0, http_client=http_client) as client:
                await client.messages.create(
                    model="claude-sonnet-5", max_tokens=5, messages=[{"role": "user", "content": "x"}]
                )
    except Exception as exc:  # noqa: BLE001 - the point is what the SDK raised
        return map_error(sdk, exc)
    raise AssertionError("the SDK did not raise")


SDKS = pytest.mark.parametrize("sdk", ["openai", "anthropic"])


@SDKS
@pytest.mark.anyio
async def test_401_names_the_key_variable_never_the_key(sdk: str) -> None:
    error = await sdk_error(sdk, error_reply(401, f"invalid x-api-key {KEY}"))
    assert (error.status, error.type, error.provider) == (401, "provider_auth_error", sdk)
    assert f"{sdk.upper()}_API_KEY" in error.message and KEY not in error.message


@SDKS
@pytest.mark.anyio
async def test_429_keeps_retry_after_and_the_upstream_message(sdk: str) -> None:
    error = await sdk_error(sdk, error_reply(429, "Number of requests exceeded", {"retry-after": "12"}))
    assert (error.status, error.type, error.retryable, error.retry_after) == (429, "rate_limited", True, "12")
    assert error.message == f"{sdk} rate limit: Number of requests exceeded"


@SDKS
@pytest.mark.anyio
async def test_5xx_is_a_retryable_502_and_4xx_passes_through(sdk: str) -> None:
    server = await sdk_error(sdk, error_reply(529, "Overloaded"))
    assert (server.status, server.type, server.retryable) == (502, "upstream_error", True)
    assert server.message == f"{sdk} failed with HTTP 529: Overloaded"
    client = await sdk_error(sdk, error_reply(400, "max_tokens: too large"))
    assert (client.status, client.type, client.retryable) == (400, "upstream_error", False)


@SDKS
@pytest.mark.anyio
async def test_timeout_and_connection_failure(sdk: str) -> None:
    timeout = await sdk_error(sdk, failing(httpx2.ConnectTimeout))
    assert (timeout.status, timeout.type, timeout.retryable) == (504, "upstream_timeout", True)
    refused = await sdk_error(sdk, failing(httpx2.ConnectError))
    assert (refused.status, refused.type, refused.retryable) == (502, "upstream_error", True)
    assert refused.message == f"could not connect to {sdk}"


def test_transport_errors_mid_stream() -> None:
    request = httpx2.Request("POST", "https://upstream.test/v1")
    stalled = map_transport_error(httpx2.ReadTimeout("slow", request=request), provider="openai")
    assert (stalled.status, stalled.type) == (504, "upstream_timeout")
    reset = map_transport_error(httpx2.ReadError("reset", request=request), provider="openai")
    assert (reset.status, reset.type, reset.message) == (
        502,
        "upstream_error",
        "openai connection failed mid-stream: ReadError",
    )


def prepared(sdk: str, client: Any) -> OpenAIRequest | AnthropicRequest:
    """The adapter's prepared request for `sdk` (as the adapters build it)."""
    if sdk == "openai":
        return OpenAIRequest(client, OpenAIOptions.construct(method="post", url="/chat/completions", content=b""))
    return AnthropicRequest(client, AnthropicOptions.construct(method="post", url="/v1/messages", content=b""))


@SDKS
@pytest.mark.anyio
@pytest.mark.parametrize("status", [200, 201, 299])
async def test_a_2xx_opens_the_stream_with_its_body_unread(sdk: str, status: int) -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(status, content=b"data: 1\n\n")

    async with sdk_client(sdk, handler) as client:
        response = await prepared(sdk, client).send(b'{"a": 1}', [(b"x-request-id", b"r-1")])
        assert (response.status_code, await response.aread()) == (status, b"data: 1\n\n")
    (request,) = seen
    assert (request.content, request.headers["x-request-id"]) == (b'{"a": 1}', "r-1")


@SDKS
@pytest.mark.anyio
@pytest.mark.parametrize("status", [100, 101, 103, 300, 301, 302, 304, 307, 308])
async def test_any_other_status_below_400_is_a_502_never_retried(sdk: str, status: int) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, headers={"location": "https://elsewhere.test/"})

    async with sdk_client(sdk, handler) as client:
        with pytest.raises(Exception) as caught:  # noqa: PT011 - the SDK's own status error
            await prepared(sdk, client).send(b"{}")
    error = map_error(sdk, caught.value)
    assert (error.status, error.type, error.retryable) == (502, "upstream_error", False)
    assert error.message == f"{sdk} answered HTTP {status} instead of a stream"


@SDKS
@pytest.mark.anyio
async def test_a_request_the_client_refuses_to_send_is_not_retried(sdk: str) -> None:
    error = await sdk_error(sdk, failing(httpx2.LocalProtocolError))
    assert (error.status, error.type, error.retryable) == (502, "upstream_error", False)
    assert error.message == f"{sdk} request could not be sent: boom"


def test_an_endless_sse_line_mid_stream_is_upstream_error() -> None:
    error = map_transport_error(
        sse.LineTooLongError("an event-stream line is longer than 1048576 bytes"), provider="anthropic"
    )
    assert (error.status, error.type, error.retryable) == (502, "upstream_error", False)
    assert error.message == "anthropic sent a broken stream: an event-stream line is longer than 1048576 bytes"
