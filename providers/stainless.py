"""What the adapters built on Stainless-generated SDKs (openai, anthropic) share: the
request the SDK prepares once and sends per call (`PreparedRequest`), and the error mapping.

Both SDKs raise the same shapes: `APIStatusError` (`.status_code`, `.response`, `.message`,
`.body`), `APITimeoutError` (a subclass of `APIConnectionError`) and `APIConnectionError`.
The adapters pass their SDK's three classes in, so this module imports neither SDK.
Bytes read from the raw `httpx2` response after the status was checked fail with
`httpx2` exceptions instead: `map_transport_error` maps those.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx2

from streamgate.errors import GatewayError, UpstreamError, UpstreamTimeoutError, error_from_status


class PreparedRequest:
    """A `POST` the SDK builds once, at start-up, and sends per call with a new body.

    The SDK's `_build_request` resolves everything that is the same for every call — the
    URL against `base_url`, the auth and default headers (user agent, `x-stainless-*`
    platform headers), the timeout — and costs ~0.2 ms of CPU per call warm, more than
    half a millisecond cold (the code it walks: option models, `httpx2.Headers` merges,
    three URL parses). Per call we only copy its headers with the new body into a fresh
    `httpx2.Request` and hand that to the SDK's own send path — openai's `_send_request`
    (its workload-identity auth, then its `httpx2` client); for anthropic its
    `_prepare_request` hook (where a client signs requests) and its `httpx2` client with its
    `custom_auth` — and an error status still becomes the SDK's own exception
    (`_make_status_error_from_response`), as `client.request` does. These are internals of
    the SDKs' current majors, which `pyproject.toml` pins; the tests run the real SDKs.
    """

    __slots__ = ("_client", "_url", "headers", "_extensions")

    def __init__(self, client: Any, options: Any) -> None:
        """`options`: the SDK's `FinalRequestOptions` for the call, with any body."""
        template: httpx2.Request = client._build_request(options)
        self._client = client
        self._url = template.url
        #: The headers every call sends (an adapter may filter them once, at start-up).
        self.headers = [(name, value) for name, value in template.headers.raw if name.lower() != b"content-length"]
        self._extensions = template.extensions

    async def send(self, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()) -> httpx2.Response:
        """Send `body` (plus `headers`); the response once its status is a success, its
        body unread. Raises the SDK's status error, or `httpx2.RequestError`."""
        request = httpx2.Request(
            "POST", self._url, headers=[*self.headers, *headers], content=body, extensions=dict(self._extensions)
        )
        response = await self._send(request)
        if response.status_code >= 400:
            try:
                await response.aread()
            finally:
                await response.aclose()
            raise self._client._make_status_error_from_response(response)
        return response

    async def _send(self, request: httpx2.Request) -> httpx2.Response:
        client = self._client
        if hasattr(client, "_send_request"):  # openai
            return await client._send_request(request, stream=True)  # type: ignore[no-any-return]
        await client._prepare_request(request)  # anthropic
        auth = {} if client.custom_auth is None else {"auth": client.custom_auth}
        return await client._client.send(request, stream=True, **auth)  # type: ignore[no-any-return]


def map_sdk_error(
    exc: BaseException,
    *,
    provider: str,
    key_env: str,
    status_error: type[BaseException],
    timeout_error: type[BaseException],
    connection_error: type[BaseException],
) -> GatewayError:
    """The contract's error for an SDK exception (or, from `PreparedRequest.send`, an
    `httpx2.RequestError`) raised while opening a stream.

    Status errors go through the shared `error_from_status` (with `Retry-After` from the
    upstream's headers); timeouts and connection failures are retryable. The message is
    the upstream's own `error.message` when it sent one; a key is never put into it.
    """
    if isinstance(exc, status_error):
        response: httpx2.Response = exc.response  # type: ignore[attr-defined]
        return error_from_status(
            response.status_code,
            _upstream_message(exc),
            provider=provider,
            key_env=key_env,
            retry_after=response.headers.get("retry-after"),
        )
    if isinstance(exc, timeout_error | httpx2.TimeoutException):
        return UpstreamTimeoutError(f"{provider} did not answer in time", provider=provider)
    if isinstance(exc, connection_error | httpx2.RequestError):
        return connection_failed(provider)
    return UpstreamError(f"{provider} call failed: {type(exc).__name__}", provider=provider)


def map_transport_error(exc: httpx2.RequestError, *, provider: str) -> GatewayError:
    """The contract's error for an `httpx2` failure while reading a stream's bytes."""
    if isinstance(exc, httpx2.TimeoutException):
        return UpstreamTimeoutError(f"{provider} stopped sending data (timed out)", provider=provider)
    return UpstreamError(f"{provider} connection failed mid-stream: {type(exc).__name__}", provider=provider)


def connection_failed(provider: str) -> UpstreamError:
    """A retryable 502: the upstream could not be reached or dropped the connection."""
    error = UpstreamError(f"could not connect to {provider}", provider=provider)
    error.retryable = True
    return error


def _upstream_message(exc: Any) -> str:
    """`error.message` of the upstream's JSON body, else the SDK's own message
    (`Error code: 500`). openai keeps only the inner `error` object in `.body`, anthropic
    the whole `{"type": "error", "error": {...}}`."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict):
            body = inner
        message = body.get("message")
        if isinstance(message, str) and message:
            return message
    return str(exc.message)
