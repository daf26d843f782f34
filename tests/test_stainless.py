"""`providers.stainless`: the exceptions the real openai and anthropic SDKs raise (over
an `httpx2.MockTransport` upstream) mapped to the contract's errors, the prepared
request that opens a stream only on a `2xx`, and its direct path (over a loopback
upstream) sending what the SDK's own send path sends."""

from __future__ import annotations

import asyncio
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
from streamgate.upstream_http import UpstreamTransport, sdk_http_client
from support import settings
from wire_upstreams import ProviderUpstream

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


# --- the direct path: a plain-key client's prepared request skips the SDK's send layers ---


def loopback_client(sdk: str, base_url: str, http_client: httpx2.AsyncClient, kind: type | None = None) -> Any:
    if sdk == "openai":
        return (kind or openai.AsyncOpenAI)(api_key=KEY, base_url=base_url, max_retries=0, http_client=http_client)
    root = base_url.removesuffix("/v1")
    return (kind or anthropic.AsyncAnthropic)(api_key=KEY, base_url=root, max_retries=0, http_client=http_client)


def httpx2_sends(monkeypatch: pytest.MonkeyPatch) -> list[httpx2.Request]:
    """Every request that goes through an `httpx2.AsyncClient.send` from now on."""
    sent: list[httpx2.Request] = []
    send = httpx2.AsyncClient.send

    async def counted(self: httpx2.AsyncClient, request: httpx2.Request, **options: Any) -> httpx2.Response:
        sent.append(request)
        return await send(self, request, **options)

    monkeypatch.setattr(httpx2.AsyncClient, "send", counted)
    return sent


async def send_both_ways(sdk: str, url: str, status: int = 200) -> tuple[list[Any], list[Any]]:
    """The same call sent through `sdk_http_client` (direct) and through an `httpx2` client
    on the same transport that `sdk_http_client` did not make (the SDK's send path): what
    each returned or raised (mapped)."""
    outcomes: list[Any] = []
    timeout = httpx2.Timeout(settings().upstream_timeout_s)
    for http_client in (
        sdk_http_client(settings()),
        httpx2.AsyncClient(timeout=timeout, transport=UpstreamTransport()),
    ):
        async with loopback_client(sdk, url, http_client) as client:
            try:
                response = await prepared(sdk, client).send(b'{"a": 1}', [(b"x-request-id", b"r-1")])
                outcomes.append((response.status_code, await response.aread()))
            except Exception as error:  # noqa: BLE001 - the SDK's status error, compared both ways
                mapped = map_error(sdk, error)
                outcomes.append((mapped.status, mapped.type, mapped.message, mapped.retry_after))
    return outcomes[:1], outcomes[1:]


@SDKS
def test_the_direct_path_sends_what_the_sdk_path_sends(sdk: str, monkeypatch: pytest.MonkeyPatch) -> None:
    upstream = ProviderUpstream().script(b"data: 1\n\n", b"data: 1\n\n")
    sends = httpx2_sends(monkeypatch)
    with upstream.loopback.running():
        direct, through_sdk = asyncio.run(send_both_ways(sdk, upstream.loopback.url))
    assert direct == through_sdk == [(200, b"data: 1\n\n")]
    assert len(sends) == 1  # the SDK's path only: the direct one never built an `httpx2.Request`
    first, second = upstream.seen
    assert (first.path, first.body) == (second.path, second.body) == (second.path, b'{"a": 1}')
    assert first.headers == second.headers and first.headers["x-request-id"] == "r-1"


@SDKS
def test_the_direct_path_raises_the_sdks_own_status_error(sdk: str) -> None:
    body = json.dumps({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}).encode()
    upstream = ProviderUpstream().script((429, body), (429, body))
    with upstream.loopback.running():
        direct, through_sdk = asyncio.run(send_both_ways(sdk, upstream.loopback.url))
    assert direct == through_sdk
    assert direct[0][:3] == (429, "rate_limited", f"{sdk} rate limit: slow down")


class _SigningAnthropic(anthropic.AsyncAnthropic):
    """A client that signs each request in `_prepare_request`, as Bedrock's and Vertex's do."""

    async def _prepare_request(self, request: httpx2.Request) -> None:
        request.headers["x-signature"] = f"signed:{len(request.content)}"


def test_a_client_that_signs_its_requests_keeps_the_sdk_path() -> None:
    async def send_once(url: str) -> None:
        async with loopback_client("anthropic", url, sdk_http_client(settings()), _SigningAnthropic) as client:
            response = await prepared("anthropic", client).send(b"{}")
            await response.aread()

    upstream = ProviderUpstream().script(b"data: 1\n\n")
    with upstream.loopback.running():
        asyncio.run(send_once(upstream.loopback.url))
    assert upstream.seen[0].headers["x-signature"] == "signed:2"


def test_the_direct_paths_header_template_keeps_no_calls_headers() -> None:
    """The direct path copies its headers once made per call: what one call adds (its
    headers, its key, a trace's `traceparent`) reaches that call's request only."""
    from streamgate import keys
    from streamgate.timing import REQUEST_TIMING, RequestTiming
    from test_tracing import capturing_tracer

    tracer, _ = capturing_tracer()
    call: Any = type("Call", (), {"provider": "openai", "model": "gpt-4o"})()

    async def send_three(url: str) -> None:
        async with loopback_client("openai", url, sdk_http_client(settings())) as client:
            keys.attach(client, "openai", f"{KEY},sk-second-key")
            request = prepared("openai", client)
            timing = RequestTiming(0.0)
            timing.trace = tracer.request(call, {"headers": []}, 0.0)
            token = REQUEST_TIMING.set(timing)
            try:
                response = await request.send(b"{}", [(b"x-request-id", b"r-1")])
            finally:
                REQUEST_TIMING.reset(token)
            await response.aread()
            await response.aclose()
            for _ in range(2):
                response = await request.send(b"{}")
                await response.aread()
                await response.aclose()

    upstream = ProviderUpstream().script(b"data: 1\n\n", b"data: 1\n\n", b"data: 1\n\n")
    with upstream.loopback.running():
        asyncio.run(send_three(upstream.loopback.url))
    heads = [raw.partition(b"\r\n\r\n")[0].lower() for raw in upstream.loopback.requests]
    assert [head.count(b"\r\ntraceparent: 00-") for head in heads] == [1, 0, 0]
    assert [head.count(b"\r\nx-request-id: r-1") for head in heads] == [1, 0, 0]
    assert [head.count(b"\r\nauthorization: bearer ") for head in heads] == [1, 1, 1]
    assert [head.count(KEY.lower().encode()) + head.count(b"sk-second-key") for head in heads] == [1, 1, 1]
    assert all(head.count(b"\r\ncontent-length: 2") == 1 for head in heads)
