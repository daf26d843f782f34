"""Error mapping shared by the adapters built on Stainless-generated SDKs (openai, anthropic).

Both SDKs raise the same shapes: `APIStatusError` (`.status_code`, `.response`, `.message`,
`.body`), `APITimeoutError` (a subclass of `APIConnectionError`) and `APIConnectionError`.
The adapters pass their SDK's three classes in, so this module imports neither SDK.
Bytes read from the raw `httpx2` response after the status was checked fail with
`httpx2` exceptions instead: `map_transport_error` maps those.
"""

from __future__ import annotations

from typing import Any

import httpx2

from providers.errors import GatewayError, UpstreamError, UpstreamTimeoutError, error_from_status


def map_sdk_error(
    exc: BaseException,
    *,
    provider: str,
    key_env: str,
    status_error: type[BaseException],
    timeout_error: type[BaseException],
    connection_error: type[BaseException],
) -> GatewayError:
    """The contract's error for an SDK exception raised while opening a stream.

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
    if isinstance(exc, timeout_error):
        return UpstreamTimeoutError(f"{provider} did not answer in time", provider=provider)
    if isinstance(exc, connection_error):
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
