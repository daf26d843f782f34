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
import multidict
import yarl

from .. import keys
from ..errors import GatewayError, UpstreamError, UpstreamTimeoutError, error_from_status
from ..sdk_internals import require_internals
from ..sse import LineTooLongError
from ..upstream_http import BodyTooLarge, HeadTemplate, on_close, read_at_most, transport_of


class PreparedRequest:
    """A request the SDK builds once, at start-up, and sends per call with a new body
    (a `POST` to its URL, or any method to another path: `url_for`).

    The SDK's `_build_request` resolves everything that is the same for every call — the
    URL against `base_url`, the auth and default headers (user agent, `x-stainless-*`
    platform headers), the timeout. Per call only the body and a few headers change, and
    an error status still becomes the SDK's own exception
    (`_make_status_error_from_response`), as `client.request` does.

    How a call goes out: when the SDK client would add nothing to a request on its way
    out (a plain API key: no request signing, no token exchange, no auth hook; `direct_ok`,
    per SDK) and its HTTP client is `sdk_http_client`'s, the headers the SDK built go
    straight to that client's `UpstreamTransport.open` (aiohttp): no `httpx2.Request`, no
    trip through the SDK's and `httpx2`'s send layers, which cost a good part of a short
    request's CPU (`docs/BENCHMARKS.md`). Otherwise each call builds an `httpx2.Request`
    and hands it to the SDK's own send path (`_send`: one subclass per SDK). These are
    internals of the SDKs' current majors, which `pyproject.toml` pins: each subclass
    names the ones it calls (`internals`), checked when it is built; the tests run the
    real SDKs, both ways.
    """

    __slots__ = (
        "_client",
        "_url",
        "_headers",
        "_extensions",
        "_keys",
        "_key_headers",
        "_direct",
        "_direct_url",
        "_direct_timeout",
        "_template",
        "_text_key_headers",
    )

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
        self._text_key_headers: tuple[tuple[str, str], ...] = ()
        self._extensions = template.extensions
        self._direct = transport_of(getattr(client, "_client", None)) if self.direct_ok(client) else None
        if self._direct is not None:
            self._direct_url = yarl.URL(str(template.url), encoded=True)
            self._direct_timeout = self._direct.timeout(template.extensions.get("timeout", {}))
        self.headers = [(name, value) for name, value in template.headers.raw if name.lower() != b"content-length"]

    @classmethod
    def direct_ok(cls, client: Any) -> bool:
        """Whether `client` would send a prepared request as it is (then it may go straight
        to the transport)."""
        return False

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
        #: What `_attempt` sends per call through the transport (made once: no conversion
        #: per call; serialized once by the transport).
        self._template = HeadTemplate(_text(self._headers))
        self._text_key_headers = tuple(_text(self._key_headers))

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
            return await self._send_with_key(ring, body, headers, method, url)
        response = await self._attempt(body, headers, method, url, None)
        if 200 <= response.status_code < 300:
            return response
        raise self._client._make_status_error_from_response(await read_at_most(response))

    async def _send_with_key(
        self,
        ring: keys.KeyRing,
        body: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        method: str,
        url: httpx2.URL | None,
    ) -> httpx2.Response:
        """`send` with the key `ring` chooses, held until the response is let go; a `429`,
        `401` or `403` answer sets that key to rest and, while another key is usable,
        the request goes out again with it (not a retry: the key failed, not the request)."""
        headers = tuple(headers)
        for _ in ring.keys:  # a key refused (and now resting) is replaced by another at once
            index = ring.choose()
            try:
                response = await self._attempt(body, headers, method, url, index)
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

    async def _attempt(
        self,
        body: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        method: str,
        url: httpx2.URL | None,
        key: int | None,
    ) -> httpx2.Response:
        """One request with the `key`-th key's header (None: the client's own), whatever its
        status; an error status's response carries its `httpx2.Request` (the SDK words
        its exception from both)."""
        direct = self._direct
        if direct is None:
            return await self._send(self._request(body, headers, method, url, key))
        sent: multidict.CIMultiDict[str] = multidict.CIMultiDict(_text(headers))  # this call's own: a trace adds to it
        if key is not None:
            sent.add(*self._text_key_headers[key])
        target = self._direct_url if url is None else yarl.URL(str(url), encoded=True)
        response = await direct.open(method, target, sent, body, self._direct_timeout, self._template)
        if not 200 <= response.status_code < 300:
            response.request = self._request(body, headers, method, url, key)
        return response

    def _request(
        self, body: bytes, headers: Iterable[tuple[bytes, bytes]], method: str, url: httpx2.URL | None, key: int | None
    ) -> httpx2.Request:
        key_header = () if key is None else (self._key_headers[key],)
        return httpx2.Request(
            method,
            url or self._url,
            headers=[*self._headers, *key_header, *headers],
            content=body,
            extensions=dict(self._extensions),
        )

    async def _send(self, request: httpx2.Request) -> httpx2.Response:
        raise NotImplementedError


def _text(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Header pairs as aiohttp takes them."""
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]


class OpenAIRequest(PreparedRequest):
    """openai: its `_send_request` (workload-identity auth and response normalisation,
    then its `httpx2` client)."""

    __slots__ = ()
    sdk = "openai"
    internals = ("_send_request",)

    @classmethod
    def direct_ok(cls, client: Any) -> bool:
        """No workload identity (a token per request) and no provider runtime (a response
        rewritten): `_send_request` would pass the request to its `httpx2` client as it is."""
        absent = object()
        return (
            getattr(client, "_workload_identity_auth", absent) is None
            and getattr(client, "_provider_runtime", absent) is None
        )

    async def _send(self, request: httpx2.Request) -> httpx2.Response:
        return await self._client._send_request(request, stream=True)  # type: ignore[no-any-return]


class AnthropicRequest(PreparedRequest):
    """anthropic: its `_prepare_request` hook (where a client signs requests), then its
    `httpx2` client with its `custom_auth`."""

    __slots__ = ()
    sdk = "anthropic"
    internals = ("_prepare_request",)

    @classmethod
    def direct_ok(cls, client: Any) -> bool:
        """No `custom_auth`, and `_prepare_request` is the base client's no-op (Bedrock's and
        Vertex's clients sign each request there)."""
        owner = next((kind for kind in type(client).__mro__ if "_prepare_request" in vars(kind)), None)
        return client.custom_auth is None and owner is not None and owner.__module__ == "anthropic._base_client"

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
