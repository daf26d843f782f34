"""The HTTP client every SDK is handed: an `httpx2.AsyncClient` over `UpstreamTransport`, a
lean HTTP/1.1 transport on asyncio + `httptools` (the C parser uvicorn already uses).

The SDK still builds, authenticates and sends each request through this client and turns
error statuses into its exceptions; only the bytes on the socket are ours. Why not the
SDKs' default `httpx2` transport (httpcore2 + h11, pure Python) or their documented
aiohttp one (`openai.DefaultAioHttpClient`)? Measured under `python -m bench` on one core:
httpx2 cost ~1.4 ms of CPU per request and ~20 µs per frame read; aiohttp ~0.3 ms more
than a bare socket to the response head at one stream, and ~22 KiB per open stream with
the `httpx2` objects it is wrapped in. Per connection this one holds a protocol object,
a C parser and the chunks not read yet.

What it does: keep-alive connections pooled per origin (LIFO, idle ones closed after
`keepalive_expiry`), TLS through `httpx2.create_ssl_context()`, the timeouts `httpx2`
puts in `request.extensions` (connect; read = the longest wait for the next bytes),
reading paused while more than `HIGH_WATER` bytes wait for a slow reader, and a response
closed before its end closes its connection (so a client that leaves frees the upstream
at once). Failures are `httpx2` exceptions (`ConnectError`, `ConnectTimeout`,
`ReadTimeout`, `ReadError`, `RemoteProtocolError`), so the SDKs map them as their own.
Proxies from the environment (`HTTPS_PROXY`, …) are not spoken here: when one is set,
`sdk_http_client` returns `httpx2`'s own client, which honours them.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable

import httptools
import httpx2

from streamgate.settings import Settings

#: Idle keep-alive connections kept per SDK client, and how long one may stay idle.
MAX_IDLE_CONNECTIONS = 1_000
KEEPALIVE_EXPIRY_S = 30.0
#: Unread body bytes above which the socket stops being read (a slow reader upstream of us).
HIGH_WATER = 256 * 1024
DEFAULT_PORTS = {b"https": 443, b"http": 80}

Origin = tuple[bytes, str, int]


def sdk_http_client(settings: Settings) -> httpx2.AsyncClient:
    """One long-lived client for one SDK client (create it at start-up, never per request)."""
    timeout = httpx2.Timeout(settings.upstream_timeout_s)
    if any(scheme != "no" for scheme in urllib.request.getproxies()):  # "no" is NO_PROXY, not a proxy
        return httpx2.AsyncClient(timeout=timeout)  # httpx2 speaks to the proxy
    return httpx2.AsyncClient(timeout=timeout, transport=UpstreamTransport())


#: Where `UpstreamTransport` leaves the body stream, in the `httpx2.Response`'s extensions.
_RAW_STREAM = "streamgate.raw_stream"


def response_body(response: httpx2.Response) -> tuple[AsyncIterator[bytes], Callable[[], Awaitable[None]]]:
    """The body's bytes as they arrive, and how to let the response go.

    Straight from `UpstreamTransport` when the response came through it and is not
    content-encoded: one async-generator hop per read instead of httpx2's four
    (`aiter_bytes` → `aiter_raw` → its bound stream → ours), and the caller can drop the
    `httpx2.Response` (with its `Request` and both header lists: ~3.5 KiB per open
    stream). Otherwise (a test's `MockTransport`, a gzip body) httpx2's `aiter_bytes`
    and `response.aclose`.
    """
    stream = response.extensions.get(_RAW_STREAM)
    if stream is not None and "content-encoding" not in response.headers:
        return stream.__aiter__(), stream.aclose
    return response.aiter_bytes(), response.aclose


class UpstreamTransport(httpx2.AsyncBaseTransport):
    """HTTP/1.1 to the providers, one request per connection at a time."""

    def __init__(self, *, max_idle: int = MAX_IDLE_CONNECTIONS, keepalive_expiry: float = KEEPALIVE_EXPIRY_S) -> None:
        self._idle: dict[Origin, list[_Connection]] = {}
        self._idle_count = 0
        self._max_idle = max_idle
        self._keepalive_expiry = keepalive_expiry
        self._ssl: ssl.SSLContext | None = None  # made at the first https connection
        self._open: set[_Connection] = set()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        timeouts = request.extensions.get("timeout", {})
        url = request.url
        scheme = url.raw_scheme
        origin = (scheme, url.host, url.port or DEFAULT_PORTS.get(scheme, 80))
        message = _encode(request, await _body(request))
        connection = self._checkout(origin) or await self._connect(origin, timeouts.get("connect"))
        connection.send(message, timeouts.get("read"))
        try:
            await connection.wait_for_head()
        except BaseException:
            connection.close()
            raise
        stream = _BodyStream(self, connection, origin)
        headers, connection.headers = connection.headers, []  # the response holds them now
        return httpx2.Response(
            connection.status, headers=headers, stream=stream,
            extensions={"http_version": b"HTTP/1.1", _RAW_STREAM: stream},
        )

    def _checkout(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.reusable and now - connection.idle_since < self._keepalive_expiry:
                return connection
            connection.close()
        return None

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        context = None
        if scheme == b"https":
            if self._ssl is None:
                self._ssl = httpx2.create_ssl_context()
            context = self._ssl
        loop = asyncio.get_running_loop()
        connection = _Connection(self._open)
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: connection, host, port, ssl=context,
                                             server_hostname=host if context else None)
        except TimeoutError as error:
            raise httpx2.ConnectTimeout(f"connecting to {host}:{port} timed out") from error
        except OSError as error:
            raise httpx2.ConnectError(f"could not connect to {host}:{port}: {error}") from error
        return connection

    def release(self, connection: _Connection, origin: Origin) -> None:
        """Keep a connection whose response was read to its end, else close it. The
        origin's connections idle past `keepalive_expiry` (the oldest, at the front: a
        burst's leftovers) are closed now rather than when a checkout reaches them."""
        idle = self._idle.setdefault(origin, [])
        now = time.monotonic()
        while idle and (idle[0].closed or now - idle[0].idle_since >= self._keepalive_expiry):
            idle.pop(0).close()
            self._idle_count -= 1
        if not connection.reusable or self._idle_count >= self._max_idle:
            connection.close()
            return
        connection.idle_since = now
        idle.append(connection)
        self._idle_count += 1

    async def aclose(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._idle.clear()
        self._idle_count = 0


async def _body(request: httpx2.Request) -> bytes:
    try:
        return request.content
    except httpx2.RequestNotRead:
        return await request.aread()


def _encode(request: httpx2.Request, body: bytes) -> bytes:
    """The request head and body, ready for one `write` (a streamed body was read whole:
    the SDKs send JSON, so it is sent with its length instead of chunked)."""
    lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), request.url.raw_path)]
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered == b"transfer-encoding" or lowered == b"content-length":
            continue
        lines.append(b"%s: %s\r\n" % (name, value))
    if body or request.method not in ("GET", "HEAD"):
        lines.append(b"content-length: %d\r\n" % len(body))
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


class _Connection(asyncio.Protocol):
    """One upstream connection: its socket, its parser and the response being read."""

    __slots__ = ("_open", "transport", "parser", "status", "headers", "chunks", "buffered", "complete", "error",
                 "closed", "paused", "busy", "idle_since", "read_timeout", "_waiter", "_head_done", "_keep_alive",
                 "_until_eof")

    def __init__(self, open_connections: set[_Connection]) -> None:
        self._open = open_connections
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.busy = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.complete = False
        self.error: Exception | None = None
        self.paused = False
        self.read_timeout: float | None = None
        self._head_done = False
        self._keep_alive = False
        self._until_eof = False

    @property
    def reusable(self) -> bool:
        return not self.closed and self.complete and self._keep_alive and self.error is None

    def send(self, message: bytes, read_timeout: float | None) -> None:
        if self.idle_since:
            self._reset()
        self.read_timeout = read_timeout
        self.busy = True
        assert self.transport is not None
        self.transport.write(message)

    async def wait_for_head(self) -> None:
        while not self._head_done:
            await self.wait()

    async def wait(self) -> None:
        """Until the parser or the socket has news; a read timeout is `httpx2.ReadTimeout`."""
        if self.error is not None:
            raise self.error
        if self.closed:
            raise httpx2.RemoteProtocolError("the upstream closed the connection")
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = None if self.read_timeout is None else loop.call_later(self.read_timeout, _time_out, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if self.error is not None:
            raise self.error

    def take(self) -> bytes:
        """The body bytes received so far (and let the socket be read again)."""
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._open.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self.error = httpx2.RemoteProtocolError(f"malformed HTTP response from the upstream: {error}")
            self.close()
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        if self._until_eof and self.busy:
            self.on_message_complete()  # a body with no length ends with the connection (RFC 9112 §6.3)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._open.discard(self)
        if self.busy and self.error is None:
            self.error = httpx2.ReadError("the upstream closed the connection before the response ended")
        self._wake()

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self._keep_alive = self.parser.should_keep_alive()
        self._until_eof = not self._keep_alive and _delimited_by_close(self.headers)  # never kept alive
        self._head_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self.busy = False


def _delimited_by_close(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a response's body has neither a content-length nor chunked framing."""
    for name, value in headers:
        name = name.lower()
        if name == b"content-length" or (name == b"transfer-encoding" and b"chunked" in value.lower()):
            return False
    return True


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(httpx2.ReadTimeout("the upstream sent nothing for the read timeout"))


class _BodyStream(httpx2.AsyncByteStream):
    """The response body as it arrives; read to its end, the connection goes back to the pool."""

    __slots__ = ("_transport", "_connection", "_origin")

    def __init__(self, transport: UpstreamTransport, connection: _Connection, origin: Origin) -> None:
        self._transport: UpstreamTransport | None = transport
        self._connection = connection
        self._origin = origin

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while True:
            if connection.chunks:
                yield connection.take()
            elif connection.complete:
                self._release()
                return
            else:
                await connection.wait()

    def _release(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.release(self._connection, self._origin)

    async def aclose(self) -> None:
        if self._transport is not None:
            if not self._connection.complete or self._connection.chunks:
                self._connection.close()
            self._release()
