"""The HTTP client every SDK is handed: an `httpx2.AsyncClient` whose transport is aiohttp.

The SDK builds and authenticates each request and turns error statuses into its
exceptions; it sends through this client, or, when it would add nothing on the way out,
the adapters hand its prepared request straight to `UpstreamTransport.open`
(`transport_of`, `providers/stainless.py`). The wire belongs to aiohttp (its C HTTP/1.1 parser,
connection pool, TLS and proxy support). Why aiohttp rather than httpx2's default
transport (httpcore2 + h11): h11 is pure Python, costlier per request and per read, and
httpcore2 keeps bytes that follow a response's end for the connection's next response;
aiohttp closes such a connection instead (`bench/` holds the figures).

What aiohttp enforces on the upstream's answer (its `ClientSession` defaults, passed to
its parser here): `max_line_size` and `max_field_size` (8190 bytes: the status line, one
header line), `max_headers` (128 headers), so a header block is bounded; a `1xx` reply is
skipped, not taken as the answer; a `HEAD` answer has no body whatever its
`Content-Length`; CR, LF or NUL in an outgoing header value is refused before anything is
sent (its header serializer); bytes that follow a response's end in the same read keep its
connection out of the pool. One gap is closed here (`_Connector`): bytes an idle pooled
connection receives later would be read as the next request's answer, so such a
connection is closed instead.

Connections are pooled per origin (`MAX_CONNECTIONS_PER_ORIGIN`, idle ones closed after
`KEEPALIVE_EXPIRY_S`); a response closed before its end closes its connection, so a
client that leaves frees the upstream at once. Timeouts are the ones `httpx2` puts in
`request.extensions` (connect; read = the longest wait for the next bytes, kept for an
open body by one timer per event loop, `_ReadWatchdog`; pool = the wait for a free
connection), never a total. TLS trusts `httpx2.create_ssl_context()`
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
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, ClassVar, Literal

import aiohttp
import httpx2
import multidict
import yarl
from aiohttp import http_writer
from aiohttp.client_proto import ResponseHandler
from aiohttp.helpers import get_env_proxy_for_url
from aiohttp.http import StreamWriter
from aiohttp.streams import EMPTY_PAYLOAD

from .sdk_internals import mismatch, require_internals
from .settings import Settings
from .timing import REQUEST_TIMING

#: Open connections allowed to one origin (more requests wait for one to be free), and
#: how long an idle keep-alive connection is kept.
MAX_CONNECTIONS_PER_ORIGIN = 2_000
KEEPALIVE_EXPIRY_S = 30.0
#: aiohttp's bounds on an answer's head (its `ClientSession` defaults): the status line and
#: one header line (`max_line_size`, `max_field_size`), and the number of headers.
MAX_HEAD_LINE_BYTES = 8190
MAX_HEADERS = 128
#: aiohttp's own defaults: the read buffer of a response's body, and the timeouts (s) past
#: which a timer is rounded up to the second (one wake-up for many timers).
_READ_BUFFER_BYTES = 2**16
_TIMEOUT_CEIL_THRESHOLD = 5.0
#: Methods a request can be sent again with when its connection drops before the answer.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


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
    if stream is not None and not stream.encoded:
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
    """Requests sent through one aiohttp connection pool (made at the first request, inside
    the running event loop), driven one level below `aiohttp.ClientSession.request`: what
    that adds per request (cookies, redirects, auth, netrc, traces, middlewares, header
    merging, a task to write the body) is nothing a request of ours uses (`_send`)."""

    def __init__(self, *, keepalive_expiry: float = KEEPALIVE_EXPIRY_S) -> None:
        require_internals("aiohttp", aiohttp.TCPConnector, ("_get", "connect"))  # `_Connector` overrides `_get`
        require_internals("aiohttp", aiohttp.ClientRequest, _Request.STEPS)
        if missing := set(_Request.STEPS) - set(aiohttp.ClientRequest.__init__.__code__.co_names):
            raise mismatch("aiohttp", f"ClientRequest.__init__ calling {', '.join(sorted(missing))}")
        require_internals("aiohttp", aiohttp.ClientResponse, ("start", "close"))
        require_internals("aiohttp", ResponseHandler, ("set_response_params", "start_timeout", "set_exception"))
        require_internals("aiohttp", StreamWriter, ("drain",))
        require_internals("aiohttp", http_writer, ("_serialize_headers",))
        _check_queues()
        self._keepalive_expiry = keepalive_expiry
        self._connector: _Connector | None = None
        self._timeouts: dict[tuple[float | None, float | None, float | None], aiohttp.ClientTimeout] = {}
        self._proxies: dict[tuple[str, str], tuple[yarl.URL | None, aiohttp.BasicAuth | None]] = {}

    def _open_connector(self) -> _Connector:
        self._connector = _Connector(
            limit=0,
            limit_per_host=MAX_CONNECTIONS_PER_ORIGIN,
            keepalive_timeout=self._keepalive_expiry,
            ssl=httpx2.create_ssl_context(),
            timeout_ceil_threshold=_TIMEOUT_CEIL_THRESHOLD,
        )
        return self._connector

    def timeout(self, timeouts: dict[str, float | None]) -> aiohttp.ClientTimeout:
        """httpx2's `connect`, `read` and `pool` (the wait for a free connection, plus
        connecting) as aiohttp's; never a total: a long answer is not cut."""
        key = (timeouts.get("connect"), timeouts.get("read"), timeouts.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            connect, read, pool = key
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=connect, sock_read=read, connect=pool, ceil_threshold=_TIMEOUT_CEIL_THRESHOLD
            )
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
        headers: multidict.CIMultiDict[str] = multidict.CIMultiDict(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.lower() != b"transfer-encoding"
        )
        url = yarl.URL(str(request.url), encoded=True)
        timeout = self.timeout(request.extensions.get("timeout", {}))
        return await self.open(request.method, url, headers, body, timeout)

    async def open(
        self,
        method: str,
        url: yarl.URL,
        headers: multidict.CIMultiDict[str],
        body: bytes,
        timeout: aiohttp.ClientTimeout,
        template: HeadTemplate | None = None,
    ) -> httpx2.Response:
        """Send one request: `template`'s headers (the ones a caller sends every time), then
        `headers`, this request's own (a trace adds to them), in their order, plus
        `Content-Length`; without a `Host`, the URL's comes first. The response once its
        head arrived, its body unread. An event stream's body is read as it comes
        (`response_body`); any other is bounded and decompressed here. The response
        carries no `request`: whoever words an error from it sets one."""
        timing = REQUEST_TIMING.get()  # a chat request's: its upstream timestamps, its attempt span
        attempt = None
        if timing is not None:
            if timing.upstream_written_at is None:
                timing.upstream_written_at = time.monotonic()
            if timing.trace is not None:
                traced: list[tuple[str, str]] = []
                attempt = timing.trace.attempt(method, url, traced)  # its `traceparent`
                headers.extend(traced)
        try:
            with _MAPPED_ERRORS:
                response, loop = await self._send(method, url, headers, body, timeout, template)
        except BaseException as error:
            if attempt is not None:
                attempt.end(None, error)
            raise
        if timing is not None:
            timing.upstream_head_at = time.monotonic()
            if attempt is not None:
                attempt.end(response.status, None)
        read_timeout = timeout.sock_read
        watchdog = None
        is_open = not response.content.is_eof()  # a body that came with its head waits for nothing
        if read_timeout and is_open:
            watchdog = _ReadWatchdog.of(loop, read_timeout)
        raw_body = _BodyStream(response, watchdog)
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
        if is_open:  # kept for longer than this call
            _forget_heads(response)
        return answer

    async def _send(
        self,
        method: str,
        url: yarl.URL,
        headers: multidict.CIMultiDict[str],
        body: bytes,
        timeout: aiohttp.ClientTimeout,
        template: HeadTemplate | None,
    ) -> tuple[aiohttp.ClientResponse, asyncio.AbstractEventLoop]:
        """What `ClientSession._request` does for a request of ours, and nothing more: a
        connection from the pool (or a new one, within the connect timeouts), the response
        parser set with aiohttp's bounds and the read timeout, the request written, the
        answer's head read (then aiohttp's read timer is stopped: the body's reads are
        watched by `_ReadWatchdog`); the response and its event loop. An idempotent request
        whose connection dropped before the answer goes once more (as aiohttp's
        `ClientSession` does), never a `POST`."""
        if url.scheme not in ("http", "https"):
            raise aiohttp.NonHttpUrlClientError(url)
        connector = self._connector or self._open_connector()
        proxy, proxy_auth = self._proxy(url)
        loop = asyncio.get_running_loop()
        if template is not None and proxy is not None:  # aiohttp's proxy connection reads and adds to them
            headers, template = template.followed_by(headers), None
        message = b""
        if template is not None:  # written as it is (a CR or LF in a header refused before connecting)
            if body or method not in _Request.GET_METHODS:
                headers["Content-Length"] = str(len(body))
            message = template.message(method, url, headers, body)
        elif "Host" not in headers:
            first: multidict.CIMultiDict[str] = multidict.CIMultiDict(Host=url.host_port_subcomponent or "")
            first.extend(headers)
            headers = first
        again = method in _IDEMPOTENT
        while True:
            request = (
                template.request(method, url, loop)
                if template is not None
                else _Request(method, url, headers=headers, data=body, loop=loop, proxy=proxy, proxy_auth=proxy_auth)
            )
            try:
                connection = await connector.connect(request, [], timeout)
            except TimeoutError as error:
                raise aiohttp.ConnectionTimeoutError(f"Connection timeout to host {url}") from error
            try:
                protocol = connection.protocol
                assert protocol is not None
                if type(protocol._buffer) is deque:  # a new connection's
                    protocol._buffer = _LightQueue(protocol._buffer)  # type: ignore[assignment]  # a deque's duck
                protocol.set_response_params(
                    skip_payload=method == "HEAD",
                    read_until_eof=True,
                    auto_decompress=False,
                    read_timeout=timeout.sock_read,
                    read_bufsize=_READ_BUFFER_BYTES,
                    timeout_ceil_threshold=_TIMEOUT_CEIL_THRESHOLD,
                    max_line_size=MAX_HEAD_LINE_BYTES,
                    max_field_size=MAX_HEAD_LINE_BYTES,
                    max_headers=MAX_HEADERS,
                )
                response = await request.write(connection, message or request.message(), loop)
                try:
                    await response.start(connection)
                except BaseException:
                    response.close()
                    raise
                if not response.content.is_eof():
                    # aiohttp re-arms a timer on every read of the body; `_ReadWatchdog`
                    # watches the body's reads instead (with its read timeout None,
                    # `start_timeout` only cancels the pending timer, and no read arms one)
                    protocol.read_timeout = None
                    protocol.start_timeout()
                if response.content is not EMPTY_PAYLOAD:  # a body read with its head (at its end already) too
                    _lighten(response.content)
                return response, loop
            except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError, aiohttp.ClientConnectionResetError):
                connection.close()
                if not again:
                    raise
                again = False
            except aiohttp.ClientError:
                connection.close()
                raise
            except OSError as error:
                connection.close()
                if error.errno is None and isinstance(error, TimeoutError):
                    raise
                raise aiohttp.ClientOSError(*error.args) from error
            except BaseException:
                connection.close()
                raise

    async def aclose(self) -> None:
        connector, self._connector = self._connector, None
        if connector is not None:
            await connector.close()


class HeadTemplate:
    """The headers every request of one caller sends (the SDK's prepared headers), first
    and in their order, serialized once per request line by aiohttp's serializer (which
    refuses CR, LF or NUL): per call only that call's own headers and its
    `Content-Length` are serialized. A header aiohttp refuses fails each request that
    would send it (`LocalProtocolError`), as a per-call header does. Also keeps, per
    request line, the `_Request` aiohttp's pool connects for (it reads only its URL)."""

    __slots__ = ("_heads", "headers")

    #: Most request lines (method and URL) kept.
    MAX_HEADS = 64

    def __init__(self, headers: Iterable[tuple[str, str]]) -> None:
        self.headers: multidict.CIMultiDict[str] = multidict.CIMultiDict(headers)
        self._heads: dict[tuple[str, yarl.URL], tuple[bytes, _Request]] = {}

    def message(self, method: str, url: yarl.URL, headers: multidict.CIMultiDict[str], body: bytes) -> bytes:
        """The request's bytes: the request line and the template's headers (the URL's
        `Host` first if they have none), then `headers`, then `body`."""
        # `_serialize_headers("", h)` is "\r\n", h's lines, "\r\n": the line ends `_head` lacks
        return b"".join((self._head(method, url)[0], http_writer._serialize_headers("", headers), body))

    def request(self, method: str, url: yarl.URL, loop: asyncio.AbstractEventLoop) -> _Request:
        """The `_Request` to connect with for `method` to `url` (never with a proxy)."""
        return self._head(method, url, loop)[1]

    def _head(
        self, method: str, url: yarl.URL, loop: asyncio.AbstractEventLoop | None = None
    ) -> tuple[bytes, _Request]:
        """The request line and the template's headers with no line end after the last
        (the call's own lines follow), and the request to connect with."""
        kept = self._heads.get((method, url))
        if kept is None:
            headers = self.headers
            if "Host" not in headers:
                headers = multidict.CIMultiDict(Host=url.host_port_subcomponent or "")
                headers.extend(self.headers)
            head = http_writer._serialize_headers(f"{method} {url.raw_path_qs} HTTP/1.1", headers)[:-4]
            request = _Request(method, url, headers=multidict.CIMultiDict(), loop=loop or asyncio.get_running_loop())
            if len(self._heads) >= self.MAX_HEADS:
                self._heads.clear()
            kept = self._heads[method, url] = (head, request)
        return kept

    def followed_by(self, headers: multidict.CIMultiDict[str]) -> multidict.CIMultiDict[str]:
        """The template's headers and then `headers`, as one (a new) `CIMultiDict`."""
        merged = self.headers.copy()
        merged.extend(headers)
        return merged


class _Request(aiohttp.ClientRequest):
    """aiohttp's request, but its headers are the ones given (no copy, nothing added but
    `Content-Length`), and its head and body go out in one write from the task that sends
    it (aiohttp writes a body from a task of its own, one more turn of the event loop)."""

    #: The steps of aiohttp's `__init__` overridden here (checked by `UpstreamTransport`).
    STEPS = ("update_headers", "update_auto_headers", "update_body_from_data")
    _content = b""

    def update_headers(self, headers: Any) -> None:
        """`headers` (this request's own `CIMultiDict`) taken as they are."""
        self.headers = headers

    def update_auto_headers(self, skip_auto_headers: Any) -> None:
        """No header of aiohttp's own (`User-Agent`, `Accept`...): the SDK's only."""

    def update_body_from_data(self, body: Any, _stacklevel: int = 3) -> None:
        """`body` (bytes) kept for `message`, with its length (none for an empty `GET`)."""
        self._content = body or b""
        if body or self.method not in self.GET_METHODS:
            self.headers["Content-Length"] = str(len(self._content))

    def message(self) -> bytes:
        """The request's bytes: its head, serialized by aiohttp (a CR, LF or NUL in it
        refused: `ValueError`), and its body."""
        url = self.url
        target = str(url) if self.proxy is not None and not self.is_ssl() else url.raw_path_qs
        return http_writer._serialize_headers(f"{self.method} {target} HTTP/1.1", self.headers) + self._content

    async def write(
        self, conn: aiohttp.connector.Connection, message: bytes, loop: asyncio.AbstractEventLoop
    ) -> aiohttp.ClientResponse:
        """`message` written at once (waiting, as aiohttp's writer does, while the
        connection's buffer is over its limit), the read timeout started; the response."""
        protocol = conn.protocol
        assert protocol is not None
        transport = protocol.transport
        if transport is None or transport.is_closing():
            raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")
        transport.write(message)
        if transport.get_write_buffer_size():  # not all sent at once
            await StreamWriter(protocol, loop).drain()
        protocol.start_timeout()
        return self.response_class(
            self.method,
            self.original_url,
            writer=None,
            continue100=None,
            timer=self._timer,
            request_info=tuple.__new__(aiohttp.RequestInfo, (self.url, self.method, _NO_HEADERS, self.original_url)),
            traces=_NO_TRACES,  # only ever read
            loop=loop,
            session=None,  # type: ignore[arg-type]
            stream_writer=_WRITTEN,  # read for its `output_size` only (the request is written)
        )


class _Written:
    """What `ClientResponse` reads of a request already written: no `StreamWriter` made."""

    __slots__ = ()
    output_size = 0


_WRITTEN: Any = _Written()
_NO_HEADERS: multidict.CIMultiDictProxy[str] = multidict.CIMultiDictProxy(multidict.CIMultiDict())
_NO_TRACES: list[Any] = []


def _forget_heads(response: aiohttp.ClientResponse) -> None:
    """Let an open aiohttp response drop the header blocks once they are copied into the
    `httpx2.Response`: its own and its parser's (the request's never reach it: `_Request`).
    An open stream then holds its body reader and connection, not the header strings it
    never reads again."""
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


class _LightQueue(list[Any]):
    """A `list` in place of the `collections.deque`s aiohttp keeps per connection and per
    open body (its protocol's queue of answers; a body's buffer of reads and its chunk
    ends): an empty `deque` holds a 64-slot block (~0.6 KiB), an empty `list` nothing.
    They hold a few items at a time (a body's reads wait at most until the next read, and
    are joined: `_BodyBuffer`; a long list of chunk ends is cut at once: `_ChunkEnds`), so
    a `popleft` that moves the rest costs little. aiohttp calls only `append`, `appendleft`, `popleft`, indexing
    and `len` on them (checked by `UpstreamTransport`)."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


class _BodyBuffer(_LightQueue):
    """An open body's buffer of bytes not yet read, which joins bytes that arrive while
    it holds a short piece to that piece: aiohttp's reader takes what is buffered piece by
    piece, each piece costing it a round of bookkeeping and a call into its parser (to
    resume reading), so a read of a chunked body that arrived as many chunks (one per SSE
    event) costs one round, not one per chunk. The reader counts bytes, not pieces (its
    size, cursor, chunk ends and offset into the first piece are byte counts), so the
    pieces' bounds mean nothing to it. A piece grows to `JOIN_BELOW` bytes at most, so a
    slow reader's buffer is not copied over and over."""

    __slots__ = ()

    #: A buffered piece this long or longer is not added to.
    JOIN_BELOW = 4096

    @classmethod
    def of(cls, pieces: Iterable[bytes]) -> _BodyBuffer:
        """A buffer of `pieces` (what aiohttp buffered before this one took over, such as a
        short answer's whole body, read with its head), joined as if they came now."""
        buffer = cls()
        for piece in pieces:
            buffer.append(piece)
        return buffer

    def append(self, data: bytes) -> None:
        if self and len(last := self[-1]) < self.JOIN_BELOW:
            self[-1] = last + data
        else:
            list.append(self, data)


class _ChunkEnds(_LightQueue):
    """An open chunked body's chunk ends (byte offsets, for aiohttp's `readchunk`, which
    nothing here calls; their count pauses reading at aiohttp's cap). A read drops the ends
    it passed with one `popleft` each, which on a long list would move the rest each time
    (a slow reader's 4,096 ends, aiohttp's cap: 5 ms), so a `popleft` on more than `KEEP`
    ends drops all but the newest `KEEP - 1` at once (what `readchunk` would have told of
    the older ones is lost; a read's bytes are not)."""

    __slots__ = ()

    KEEP = 32

    def popleft(self) -> Any:
        if len(self) <= self.KEEP:
            return self.pop(0)
        first = self[0]
        del self[: len(self) - self.KEEP + 1]
        return first


#: The methods of `collections.deque` aiohttp's `StreamReader` and `DataQueue` call.
_QUEUE_CALLS = frozenset({"append", "appendleft", "popleft"})


def _lighten(reader: aiohttp.StreamReader) -> None:
    """A body's buffer (`_BodyBuffer`, what is buffered already joined) and chunk ends
    (`_ChunkEnds`) as lists (the chunk ends made now: aiohttp would make them at a chunked
    body's first chunk; for any other body nothing reads them)."""
    reader._buffer = _BodyBuffer.of(reader._buffer)  # type: ignore[assignment]  # a deque's duck
    reader._http_chunk_splits = _ChunkEnds(reader._http_chunk_splits or ())  # type: ignore[assignment]


def _check_queues() -> None:
    """`_LightQueue` stands for what aiohttp's `StreamReader` and `DataQueue` keep as their
    `deque`s, and they call nothing on them it lacks."""
    from aiohttp import streams

    slots = set(getattr(streams.StreamReader, "__slots__", ()))
    if not {"_buffer", "_http_chunk_splits"} <= slots:
        raise mismatch("aiohttp", "StreamReader._buffer and _http_chunk_splits")
    made_in_init = streams.DataQueue.__init__.__code__.co_names
    if not issubclass(ResponseHandler, streams.DataQueue) or "_buffer" not in made_in_init:
        raise mismatch("aiohttp", "DataQueue._buffer")
    deque_only = {name for name in dir(deque) if not name.startswith("_")} - set(dir(list)) - _QUEUE_CALLS
    for owner in (streams.StreamReader, streams.DataQueue, ResponseHandler):
        for function in vars(owner).values():
            code = getattr(function, "__code__", None)
            if code is not None and (used := deque_only & set(code.co_names)):
                raise mismatch("aiohttp", f"{owner.__name__} calling deque's {', '.join(sorted(used))}")


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
    pool; closed before its end, its connection is closed. Its read timeout is kept by
    `watchdog` (while the body is read), which fails a read that waits longer."""

    __slots__ = ("_response", "closed", "encoded", "reader", "seen", "waiting", "waiting_since", "watchdog")

    def __init__(self, response: aiohttp.ClientResponse, watchdog: _ReadWatchdog | None) -> None:
        self._response = response
        #: Whether the body is content-encoded (then httpx2 decodes it: `response_body`).
        self.encoded = "content-encoding" in response.headers
        #: Called once when the body is let go (`on_close`).
        self.closed: Callable[[], None] | None = None
        self.reader = response.content
        self.watchdog = watchdog
        #: Whether a read waits for the upstream's next bytes now (not our consumer).
        self.waiting = False
        #: The watchdog's: the body's bytes at its last look, and since when (its clock) a
        #: read has waited with no new bytes (0.0: none seen waiting).
        self.seen = 0
        self.waiting_since = 0.0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        read = self.reader.readany  # b"" at the end (`iter_any` is one more layer per read)
        watchdog = self.watchdog
        if watchdog is None:
            with _MAPPED_ERRORS:
                while data := await read():
                    yield data
            return
        watchdog.add(self)
        try:
            with _MAPPED_ERRORS:
                while True:
                    self.waiting = True
                    data = await read()
                    self.waiting = False
                    if not data:
                        return
                    yield data
        finally:
            self.waiting = False
            watchdog.discard(self)

    def time_out(self) -> None:
        """Fail the waiting read as aiohttp's read timer would: `SocketTimeoutError` on the
        body (raised as httpx2's `ReadTimeout`), the connection marked to close."""
        error = aiohttp.SocketTimeoutError("Timeout on reading data from socket")
        protocol = self._response.connection.protocol if self._response.connection is not None else None
        if protocol is not None:
            protocol.set_exception(error)
        self.reader.set_exception(error)

    async def aclose(self) -> None:
        if self.watchdog is not None:
            self.watchdog.discard(self)
        self._response.close()  # a no-op once the body was read to its end (then pooled)
        closed, self.closed = self.closed, None
        if closed is not None:
            closed()


class _ReadWatchdog:
    """The read timeout of every open body (`_BodyStream`) of one event loop and one
    timeout, under one timer instead of aiohttp's timer per connection, re-armed on every
    read. Only a read waiting for the upstream counts (as aiohttp's `sock_read`): a body
    whose consumer is slow is not waiting. The timer ticks every `timeout / 16` while a body
    is read: a tick that finds a read waiting with no new bytes since an earlier tick at
    least `timeout` before fails it, so a silent upstream fails between `timeout` and
    `timeout + timeout / 16` into the wait. A body costs its read two attribute stores, no
    clock read. Gone at the first tick that finds no body left."""

    __slots__ = ("bodies", "loop", "tick_s", "timeout_s", "timer")

    #: Per event loop and read timeout (one loop per server, several in the tests).
    running: ClassVar[dict[tuple[asyncio.AbstractEventLoop, float], _ReadWatchdog]] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self.loop = loop
        self.timeout_s = timeout_s
        self.tick_s = timeout_s / 16
        self.bodies: set[_BodyStream] = set()
        self.timer: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop, timeout_s: float) -> _ReadWatchdog:
        watchdog = cls.running.get((loop, timeout_s))
        if watchdog is None:
            watchdog = cls.running[loop, timeout_s] = cls(loop, timeout_s)
        return watchdog

    def add(self, body: _BodyStream) -> None:
        body.waiting_since = 0.0
        self.bodies.add(body)
        if self.timer is None:
            self.timer = self.loop.call_later(self.tick_s, self._tick)
            # gone if its timer stopped since this body opened (then one more timer, at worst)
            self.running.setdefault((self.loop, self.timeout_s), self)

    def discard(self, body: _BodyStream) -> None:
        """`body` no longer watched; the timer stops at its next tick if no body is left (not
        cancelled now: a new request would arm it again, a timer per request at c=1)."""
        self.bodies.discard(body)

    def _tick(self) -> None:
        now = self.loop.time()
        expired: list[_BodyStream] = []
        for body in self.bodies:
            if not body.waiting:
                body.waiting_since = 0.0
                continue
            total = body.reader.total_bytes
            if total != body.seen or not body.waiting_since:
                body.seen = total
                body.waiting_since = now  # the wait began at the latest now
            elif now - body.waiting_since >= self.timeout_s:
                expired.append(body)
        for body in expired:
            self.bodies.discard(body)
            body.time_out()
        if self.bodies:
            self.timer = self.loop.call_later(self.tick_s, self._tick)
        else:
            self._stop()

    def _stop(self) -> None:
        self.timer = None
        if self.running.get((self.loop, self.timeout_s)) is self:
            del self.running[self.loop, self.timeout_s]


def _is_event_stream(response: aiohttp.ClientResponse) -> bool:
    content_type = response.headers.get("content-type", "")
    return content_type[:17].lower() == "text/event-stream"


class _BoundedBody(httpx2.AsyncByteStream):
    """An answer that is not an event stream (an error, a model list, a JSON answer):
    whoever reads it reads it whole, so it is decompressed here (httpx2's own decoders,
    in bounded pieces) and ends with `BodyTooLarge` past `MAX_WHOLE_BODY_BYTES`."""

    __slots__ = ("_decoded", "_raw")
    encoded = False  # decoded here

    def __init__(self, decoded: httpx2.Response, raw: _BodyStream) -> None:
        self._decoded = decoded
        self._raw = raw

    @classmethod
    def of(cls, status: int, raw_headers: Any, raw: _BodyStream) -> tuple[_BoundedBody, list[tuple[bytes, bytes]]]:
        """The bounded stream and the headers to show with it (no more `content-encoding`)."""
        decoded = httpx2.Response(status, headers=raw_headers, stream=raw)
        if not raw.encoded:
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
