"""What the adapters built on Stainless-generated SDKs (openai, anthropic) share: the
request the SDK prepares once and sends per call (`PreparedRequest`), and the error mapping.

Both SDKs raise the same shapes: `APIStatusError` (`.status_code`, `.response`, `.message`,
`.body`), `APITimeoutError` (a subclass of `APIConnectionError`) and `APIConnectionError`.
The adapters pass their SDK's three classes in, so this module imports neither SDK.
Bytes read from the raw `httpx2` response after the status was checked fail with
`httpx2` exceptions instead: `map_transport_error` maps those.

An error status's body is read up to `upstream_http.MAX_ERROR_BODY_BYTES` (after
decompression); a longer one is never held whole: the call fails as a short `upstream_error`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx2

from .. import keys
from ..errors import GatewayError, UpstreamError, UpstreamTimeoutError, error_from_status
from ..sdk_internals import require_internals
from ..sse import LineTooLongError
from ..upstream_http import BodyTooLarge, on_close, read_at_most


class PreparedRequest:
    """A request the SDK builds once, at start-up, and sends per call with a new body
    (a `POST` to its URL, or any method to another path: `url_for`).

    The SDK's `_build_request` resolves everything that is the same for every call — the
    URL against `base_url`, the auth and default headers (user agent, `x-stainless-*`
    platform headers), the timeout. Per call we only copy its headers with the new body
    into a fresh `httpx2.Request` and hand that to the SDK's own send path (`_send`: one
    subclass per SDK), and an error status still becomes the SDK's own exception
    (`_make_status_error_from_response`), as `client.request` does. These are internals
    of the SDKs' current majors, which `pyproject.toml` pins: each subclass names the
    ones it calls (`internals`), checked when it is built; the tests run the real SDKs.
    """

    __slots__ = ("_client", "_url", "_headers", "_extensions", "_keys", "_key_headers")

    #: The distribution name of the SDK, and the client internals `_send` calls.
    sdk = ""
    internals: tuple[str, ...] = ()

    def __init__(self, client: Any, options: Any) -> None:
        """`options`: the SDK's `FinalRequestOptions` for the call, with any body."""
        require_internals(
            self.sdk, client, ("_build_request", "_make_status_error_from_response", "_prepare_url", *self.internals)
        )
        template: httpx2.Request = client._build_request(options)
        self._client = client
        self._url = template.url
        #: With several keys for the provider (`keys.attach` on `client`), each call goes
        #: out with one of them (`keys.KeyRing.choose`) in place of the client's own.
        self._keys = keys.ring_of(client)
        self._key_headers: tuple[tuple[bytes, bytes], ...] = ()
        self.headers = [(name, value) for name, value in template.headers.raw if name.lower() != b"content-length"]
        self._extensions = template.extensions

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The headers every call sends (an adapter may filter them once, at start-up);
        with several keys, without the key's header (added per call)."""
        return self._headers

    @headers.setter
    def headers(self, headers: list[tuple[bytes, bytes]]) -> None:
        if self._keys is None:
            self._headers = headers
        else:  # the key's header as the SDK built it, or as an adapter put it back
            self._headers, key_headers = keys.key_headers(self._keys, headers)
            self._key_headers = key_headers or self._key_headers

    def url_for(self, path: str) -> httpx2.URL:
        """The URL of `path` (with any query) under the client's `base_url`, as the SDK
        joins them."""
        return self._client._prepare_url(path)  # type: ignore[no-any-return]

    async def send(
        self,
        body: bytes,
        headers: Iterable[tuple[bytes, bytes]] = (),
        *,
        method: str = "POST",
        url: httpx2.URL | None = None,
    ) -> httpx2.Response:
        """Send `body` (plus `headers`) as `method` to `url` (else the prepared URL); the
        response once its status is a `2xx`, its body unread. Any other status (a redirect
        too: it is never followed) raises the SDK's status error, its body read up to
        `upstream_http.MAX_ERROR_BODY_BYTES` after decompression (past it `BodyTooLarge`); a failure to connect or
        read, `httpx2.RequestError`."""
        ring = self._keys
        if ring is not None and self._key_headers:
            return await self._send_with_key(ring, body, headers, method, url or self._url)
        request = httpx2.Request(
            method,
            url or self._url,
            headers=[*self._headers, *headers],
            content=body,
            extensions=dict(self._extensions),
        )
        response = await self._send(request)
        if 200 <= response.status_code < 300:
            return response
        raise self._client._make_status_error_from_response(await read_at_most(response))

    async def _send_with_key(
        self, ring: keys.KeyRing, body: bytes, headers: Iterable[tuple[bytes, bytes]], method: str, url: httpx2.URL
    ) -> httpx2.Response:
        """`send` with the key `ring` chooses, held until the response is let go; a `429`,
        `401` or `403` answer sets that key to rest and, while another key is usable,
        the request goes out again with it (not a retry: the key failed, not the request)."""
        for _ in ring.keys:  # a key refused (and now resting) is replaced by another at once
            index = ring.choose()
            request = httpx2.Request(
                method,
                url,
                headers=[*self._headers, self._key_headers[index], *headers],
                content=body,
                extensions=dict(self._extensions),
            )
            try:
                response = await self._send(request)
            except BaseException:
                ring.release(index)
                raise
            status = response.status_code
            if 200 <= status < 300:
                on_close(response, lambda index=index: ring.release(index))  # type: ignore[misc]
                return response
            ring.release(index)
            again = ring.answered(index, status, response.headers.get("retry-after"))
            response = await read_at_most(response)
            if not again:
                break
        raise self._client._make_status_error_from_response(response)

    async def _send(self, request: httpx2.Request) -> httpx2.Response:
        raise NotImplementedError


class OpenAIRequest(PreparedRequest):
    """openai: its `_send_request` (workload-identity auth and response normalisation,
    then its `httpx2` client)."""

    __slots__ = ()
    sdk = "openai"
    internals = ("_send_request",)

    async def _send(self, request: httpx2.Request) -> httpx2.Response:
        return await self._client._send_request(request, stream=True)  # type: ignore[no-any-return]


class AnthropicRequest(PreparedRequest):
    """anthropic: its `_prepare_request` hook (where a client signs requests), then its
    `httpx2` client with its `custom_auth`."""

    __slots__ = ()
    sdk = "anthropic"
    internals = ("_prepare_request",)

    async def _send(self, request: httpx2.Request) -> httpx2.Response:
        client = self._client
        await client._prepare_request(request)
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

    A status below 400 (a redirect) is a non-retryable `upstream_error`; other status
    errors go through the shared `error_from_status` (with `Retry-After` from the
    upstream's headers); timeouts and connection failures are retryable, a request the
    HTTP client refused to send (`LocalProtocolError`) is not. The message is
    the upstream's own `error.message` when it sent one; a key is never put into it.
    """
    if isinstance(exc, status_error):
        response: httpx2.Response = exc.response  # type: ignore[attr-defined]
        if response.status_code < 400:  # a redirect (never followed): not the stream asked for
            return UpstreamError(
                f"{provider} answered HTTP {response.status_code} instead of a stream", provider=provider
            )
        return error_from_status(
            response.status_code,
            _upstream_message(exc),
            provider=provider,
            key_env=key_env,
            retry_after=response.headers.get("retry-after"),
        )
    cause = exc if isinstance(exc, httpx2.RequestError) else exc.__cause__
    if isinstance(cause, BodyTooLarge):  # a bounded read: a short message, never the body
        return UpstreamError(f"{provider} sent an answer too large to read: {cause}", provider=provider)
    if isinstance(cause, httpx2.LocalProtocolError):  # refused before sending, e.g. CR/LF in a header value
        return UpstreamError(f"{provider} request could not be sent: {cause}", provider=provider)
    if isinstance(exc, timeout_error | httpx2.TimeoutException):
        return UpstreamTimeoutError(f"{provider} did not answer in time", provider=provider)
    if isinstance(exc, connection_error | httpx2.RequestError):
        return connection_failed(provider)
    return UpstreamError(f"{provider} call failed: {type(exc).__name__}", provider=provider)


def map_transport_error(exc: httpx2.RequestError | LineTooLongError, *, provider: str) -> GatewayError:
    """The contract's error for an `httpx2` failure while reading a stream's bytes, or an
    event-stream line past `sse.MAX_LINE_BYTES`."""
    if isinstance(exc, LineTooLongError):
        return UpstreamError(f"{provider} sent a broken stream: {exc}", provider=provider)
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
