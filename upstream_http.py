"""The HTTP client every SDK is handed: an `httpx2.AsyncClient` whose transport is aiohttp.

The SDK builds and authenticates each request and turns error statuses into its
exceptions; it sends through this client, or, when it would add nothing on the way out,
the adapters hand its prepared request straight to `UpstreamTransport.open`
(`transport_of`, `providers/stainless.py`). The wire belongs to aiohttp (its C HTTP/1.1 parser,
connection pool, TLS and proxy support). Why aiohttp rather than httpx2's default
transport (httpcore2 + h11): h11 is pure Python, costlier per request and per read, and
httpcore2 keeps bytes that follow a response's end for the connection's next response;
aiohttp closes such a connection instead (`bench/` holds the figures).

What aiohttp enforces on the upstream's answer (its `ClientSession` defaults, kept):
`max_line_size` and `max_field_size` (8190 bytes: the status line, one header line),
`max_headers` (128 headers), so a header block is bounded; a `1xx` reply is skipped, not
taken as the answer; a `HEAD` answer has no body whatever its `Content-Length`; CR, LF
or NUL in an outgoing header value is refused before anything is sent; bytes that follow
a response's end in the same read keep its connection out of the pool. One gap is closed
here (`_Connector`): bytes an idle pooled connection receives later would be read as the
next request's answer, so such a connection is closed instead.

Connections are pooled per origin (`MAX_CONNECTIONS_PER_ORIGIN`, idle ones closed after
`KEEPALIVE_EXPIRY_S`); a response closed before its end closes its connection, so a
client that leaves frees the upstream at once. Timeouts are the ones `httpx2` puts in
`request.extensions` (connect; read = the longest wait for the next bytes; pool = the
wait for a free connection), never a total. TLS trusts `httpx2.create_ssl_context()`
(the system's store, or `SSL_CERT_FILE`). Proxies come from the environment
(`HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`; not `ALL_PROXY`), read once per origin:
aiohttp's own `trust_env` reads them, and `.netrc`, in a thread for every request. An
idempotent request (a `GET`) whose connection drops before the answer is sent once more,
never a `POST`. Failures are `httpx2` exceptions (`ConnectError`, `ConnectTimeout`,
`ReadTimeout`, `ReadError`, `RemoteProtocolError`, `LocalProtocolError`), so the SDKs
map them as their own.
"""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import aiohttp
import httpx2
import multidict
import yarl
from aiohttp.helpers import get_env_proxy_for_url

from .sdk_internals import require_internals
from .settings import Settings
from .timing import REQUEST_TIMING

#: Open connections allowed to one origin (more requests wait for one to be free), and
#: how long an idle keep-alive connection is kept.
MAX_CONNECTIONS_PER_ORIGIN = 2_000
KEEPALIVE_EXPIRY_S = 30.0
#: Headers aiohttp would add to a request that lacks them.
_AIOHTTP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")


def sdk_http_client(settings: Settings) -> httpx2.AsyncClient:
    """One long-lived client for one SDK client (create it at start-up, never per request)."""
    transport = UpstreamTransport()
    client = httpx2.AsyncClient(timeout=httpx2.Timeout(settings.upstream_timeout_s), transport=transport)
    _TRANSPORTS[client] = transport
    return client


#: The transport of each client `sdk_http_client` made (`transport_of`).
_TRANSPORTS: weakref.WeakKeyDictionary[httpx2.AsyncClient, UpstreamTransport] = weakref.WeakKeyDictionary()


def transport_of(http_client: object) -> UpstreamTransport | None:
    """The `UpstreamTransport` under `http_client` when `sdk_http_client` made it (nothing
    else, hooks or auth, on that client), else None (a test's own client)."""
    return _TRANSPORTS.get(http_client) if isinstance(http_client, httpx2.AsyncClient) else None


#: Most bytes of an upstream's answer that is read whole (not `text/event-stream`: an error,
#: a model list, a JSON answer), after decompression; past it the read fails (`BodyTooLarge`).
MAX_WHOLE_BODY_BYTES = 8 * 1024 * 1024
#: Most bytes of an upstream's error body read to word the error, after decompression.
MAX_ERROR_BODY_BYTES = 64 * 1024


class BodyTooLarge(httpx2.DecodingError):
    """An upstream answer read whole went past its size limit (after decompression)."""


async def read_at_most(response: httpx2.Response, limit: int = MAX_ERROR_BODY_BYTES) -> httpx2.Response:
    """`response` read whole (decompressed) as a new, closed response holding its body, so an
    SDK can word its error from it; `BodyTooLarge` past `limit` bytes (nothing more is read:
    a gzip bomb stays small)."""
    parts: list[bytes] = []
    size = 0
    try:
        async for data in response.aiter_bytes():
            size += len(data)
            if size > limit:
                raise BodyTooLarge(f"its answer (HTTP {response.status_code}) is over {limit} bytes; not read")
            parts.append(data)
    finally:
        await response.aclose()
    headers = [
        (name, value)
        for name, value in response.headers.raw
        if name.lower() not in (b"content-encoding", b"content-length", b"transfer-encoding")
    ]
    return httpx2.Response(
        response.status_code,
        headers=headers,
        content=b"".join(parts),
        request=response.request,
        extensions=response.extensions,
    )


#: Where `UpstreamTransport` leaves the body stream, in the `httpx2.Response`'s extensions.
_RAW_STREAM = "streamgate.raw_stream"


def response_body(response: httpx2.Response) -> tuple[AsyncIterator[bytes], Callable[[], Awaitable[None]]]:
    """The body's bytes as they arrive, and how to let the response go.

    Straight from `UpstreamTransport` when the response came through it and is not
    content-encoded: one async-generator hop per read instead of httpx2's four, and the
    caller can drop the `httpx2.Response` (with its `Request` and both header lists).
    Otherwise (a test's `MockTransport`, a gzip body) httpx2's `aiter_bytes` and
    `response.aclose`.
    """
    stream = response.extensions.get(_RAW_STREAM)
    if stream is not None and "content-encoding" not in response.headers:
        return stream.__aiter__(), stream.aclose
    return response.aiter_bytes(), response.aclose


def on_close(response: httpx2.Response, closed: Callable[[], None]) -> None:
    """Call `closed()` once, when `response`'s body is let go (`response_body`'s release,
    or `response.aclose()`): how long a request holds a provider key (`keys.py`)."""
    stream = response.extensions.get(_RAW_STREAM)
    if isinstance(stream, _BodyStream):
        stream.closed = closed
    else:
        response.stream = _NotifyingStream(response.stream, closed)


class _NotifyingStream(httpx2.AsyncByteStream):
    """A body stream (not ours: a test's transport) that calls `closed()` when closed."""

    def __init__(self, stream: Any, closed: Callable[[], None]) -> None:
        self._stream = stream
        self._closed: Callable[[], None] | None = closed

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        closed, self._closed = self._closed, None
        if closed is not None:
            closed()
        await self._stream.aclose()


class UpstreamTransport(httpx2.AsyncBaseTransport):
    """`httpx2` requests sent by one `aiohttp.ClientSession` (made at the first request,
    inside the running event loop)."""

    def __init__(self, *, keepalive_expiry: float = KEEPALIVE_EXPIRY_S) -> None:
        require_internals("aiohttp", aiohttp.TCPConnector, ("_get",))  # `_Connector` overrides it
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, float | None, float | None], aiohttp.ClientTimeout] = {}
        self._proxies: dict[tuple[str, str], tuple[yarl.URL | None, aiohttp.BasicAuth | None]] = {}

    def _open_session(self) -> aiohttp.ClientSession:
        connector = _Connector(
            limit=0,
            limit_per_host=MAX_CONNECTIONS_PER_ORIGIN,
            keepalive_timeout=self._keepalive_expiry,
            ssl=httpx2.create_ssl_context(),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None),
            skip_auto_headers=_AIOHTTP_AUTO_HEADERS,  # the request carries httpx2's headers only
        )
        return self._session

    def timeout(self, timeouts: dict[str, float | None]) -> aiohttp.ClientTimeout:
        """httpx2's `connect`, `read` and `pool` (the wait for a free connection, plus
        connecting) as aiohttp's; never a total: a long answer is not cut."""
        key = (timeouts.get("connect"), timeouts.get("read"), timeouts.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            connect, read, pool = key
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read, connect=pool)
            self._timeouts[key] = timeout
        return timeout

    def _proxy(self, url: yarl.URL) -> tuple[yarl.URL | None, aiohttp.BasicAuth | None]:
        """The environment's proxy (and its credentials) for `url`'s origin, if any."""
        origin = (url.scheme, url.host or "")
        proxy = self._proxies.get(origin)
        if proxy is None:
            try:
                proxy = self._proxies[origin] = get_env_proxy_for_url(url)
            except LookupError:
                proxy = self._proxies[origin] = (None, None)
        return proxy

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            body = request.content
        except httpx2.RequestNotRead:
            body = await request.aread()  # the SDKs send JSON: sent whole, with its length
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.lower() != b"transfer-encoding"
        ]
        url = yarl.URL(str(request.url), encoded=True)
        timeout = self.timeout(request.extensions.get("timeout", {}))
        return await self.open(request.method, url, headers, body, timeout)

    async def open(
        self, method: str, url: yarl.URL, headers: list[tuple[str, str]], body: bytes, timeout: aiohttp.ClientTimeout
    ) -> httpx2.Response:
        """Send one request (`headers` is this request's own list: a trace may add to it);
        the response once its head arrived, its body unread. An event stream's body is
        read as it comes (`response_body`); any other is bounded and decompressed here.
        The response carries no `request`: whoever words an error from it sets one."""
        session = self._session or self._open_session()
        proxy, proxy_auth = self._proxy(url)
        timing = REQUEST_TIMING.get()  # a chat request's: its upstream timestamps, its attempt span
        attempt = None
        if timing is not None:
            if timing.upstream_written_at is None:
                timing.upstream_written_at = time.monotonic()
            if timing.trace is not None:
                attempt = timing.trace.attempt(method, url, headers)  # adds `traceparent`
        try:
            with _MAPPED_ERRORS:
                response = await session.request(
                    method,
                    url,
                    headers=headers,
                    data=body or None,
                    allow_redirects=False,
                    timeout=timeout,
                    proxy=proxy,
                    proxy_auth=proxy_auth,
                )
        except BaseException as error:
            if attempt is not None:
                attempt.end(None, error)
            raise
        if timing is not None:
            timing.upstream_head_at = time.monotonic()
            if attempt is not None:
                attempt.end(response.status, None)
        raw_body = _BodyStream(response)
        stream: httpx2.AsyncByteStream = raw_body
        raw_headers: Any = response.raw_headers
        if not _is_event_stream(response):  # read whole by someone: bounded, decompressed here
            stream, raw_headers = _BoundedBody.of(response.status, raw_headers, raw_body)
        answer = httpx2.Response(
            response.status,
            headers=raw_headers,
            stream=stream,
            extensions={"http_version": b"HTTP/1.1", _RAW_STREAM: stream},
        )
        _forget_heads(response)
        return answer

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


_NO_HEADERS: multidict.CIMultiDictProxy[str] = multidict.CIMultiDictProxy(multidict.CIMultiDict())


def _forget_heads(response: aiohttp.ClientResponse) -> None:
    """Let an open aiohttp response drop the header blocks once they are copied into the
    `httpx2.Response`: the request's (kept in `request_info` only to word an error), its
    own and its parser's. An open stream then holds its body reader and connection, not
    the header strings it never reads again."""
    info = response._request_info
    response._request_info = aiohttp.RequestInfo(info.url, info.method, _NO_HEADERS, info.real_url)
    response._headers = _NO_HEADERS
    response._raw_headers = ()
    response._cache.clear()  # its cached properties (`headers`...): read again from the above
    if (parser := getattr(response._protocol, "_parser", None)) is not None:
        _forget_parser_heads(parser)


def _forget_parser_heads(parser: object) -> None:
    """Empty the two header lists (decoded and raw) aiohttp's C response parser keeps after
    a head until the connection's next response begins (copies: the message built from them
    has its own). They are reachable only as its referents; its list of pending messages
    (`(message, payload)`) is left alone."""
    for field in gc.get_referents(parser):
        if type(field) is list and field and type(field[0]) is tuple and isinstance(field[0][0], str | bytes):
            field.clear()


class _Connector(aiohttp.TCPConnector):
    """aiohttp's pool, but an idle connection flagged to close is closed, never handed
    out: one that received bytes (an answer to no request: another user's next answer
    otherwise), or one a stray read timer failed while idle (aiohttp 3.14's issue 12953)."""

    async def _get(self, key: Any, traces: list[Any]) -> aiohttp.connector.Connection | None:
        while (connection := await super()._get(key, traces)) is not None:
            protocol = connection.protocol
            if protocol is not None and not protocol.should_close:
                return connection
            connection.close()
        return None


class _BodyStream(httpx2.AsyncByteStream):
    """The response body as it arrives. Read to its end, its connection goes back to the
    pool; closed before its end, its connection is closed."""

    __slots__ = ("_response", "closed")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        #: Called once when the body is let go (`on_close`).
        self.closed: Callable[[], None] | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _MAPPED_ERRORS:
            async for data in self._response.content.iter_any():
                yield data

    async def aclose(self) -> None:
        self._response.close()  # a no-op once the body was read to its end (then pooled)
        closed, self.closed = self.closed, None
        if closed is not None:
            closed()


def _is_event_stream(response: aiohttp.ClientResponse) -> bool:
    content_type = response.headers.get("content-type", "")
    return content_type[:17].lower() == "text/event-stream"


class _BoundedBody(httpx2.AsyncByteStream):
    """An answer that is not an event stream (an error, a model list, a JSON answer):
    whoever reads it reads it whole, so it is decompressed here (httpx2's own decoders,
    in bounded pieces) and ends with `BodyTooLarge` past `MAX_WHOLE_BODY_BYTES`."""

    __slots__ = ("_decoded", "_raw")

    def __init__(self, decoded: httpx2.Response, raw: _BodyStream) -> None:
        self._decoded = decoded
        self._raw = raw

    @classmethod
    def of(cls, status: int, raw_headers: Any, raw: _BodyStream) -> tuple[_BoundedBody, list[tuple[bytes, bytes]]]:
        """The bounded stream and the headers to show with it (no more `content-encoding`)."""
        decoded = httpx2.Response(status, headers=raw_headers, stream=raw)
        if "content-encoding" not in decoded.headers:
            return cls(decoded, raw), list(raw_headers)
        plain = [
            (name, value) for name, value in raw_headers if name.lower() not in (b"content-encoding", b"content-length")
        ]
        return cls(decoded, raw), plain

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for data in self._decoded.aiter_bytes():
            size += len(data)
            if size > MAX_WHOLE_BODY_BYTES:
                raise BodyTooLarge(f"the upstream's answer is over {MAX_WHOLE_BODY_BYTES} bytes")
            yield data

    async def aclose(self) -> None:
        await self._raw.aclose()


class _MappedErrors:
    """`with _MAPPED_ERRORS:` aiohttp's failures raised as the `httpx2` exceptions the SDKs
    and adapters map. One stateless instance: an open stream's body loop holds no context
    manager of its own."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, error: BaseException | None, tb: object) -> Literal[False]:
        if error is not None and (mapped := _mapped(error)) is not None:
            raise mapped from error
        return False


_MAPPED_ERRORS = _MappedErrors()


def _mapped(error: BaseException) -> httpx2.TransportError | None:
    """The `httpx2` exception for an aiohttp failure; None for any other exception."""
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return httpx2.ConnectTimeout(str(error) or "connecting timed out")
    if isinstance(error, (aiohttp.SocketTimeoutError, asyncio.TimeoutError)):
        return httpx2.ReadTimeout(str(error) or "the upstream sent nothing for the read timeout")
    if isinstance(error, aiohttp.ClientConnectorError):
        return httpx2.ConnectError(str(error))
    if isinstance(error, aiohttp.ClientResponseError):  # the parser refused the response's head
        return httpx2.RemoteProtocolError(f"malformed HTTP response from the upstream: {error.message}")
    if isinstance(error, aiohttp.ClientPayloadError):  # a body cut short or malformed
        return httpx2.ReadError(str(error))
    if isinstance(error, aiohttp.ClientError):  # a disconnect, a reset
        return httpx2.ReadError(str(error) or type(error).__name__)
    if isinstance(error, ValueError):  # aiohttp refused to send the request as built (CR/LF in a header)
        return httpx2.LocalProtocolError(str(error))
    return None
