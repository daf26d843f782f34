"""`upstream_http`: the SDKs' `httpx2.AsyncClient` over aiohttp, on real sockets on 127.0.0.1.

Every test talks to `Upstream`, a small HTTP/1.1 server in the test's own event loop that
records the exact bytes of each request, the connections it accepted and the ones the
client closed. Covered: the request bytes we send and the chunked / content-length /
close-delimited / `HEAD` responses we read; keep-alive (reuse after a body read to its
end, no reuse after an early close, `Connection: close`, a connection the server dropped
while idle, or one idle past the expiry); TLS with `SSL_CERT_FILE`; failures as the
`httpx2` exceptions the SDKs map (`ConnectError`, `ReadTimeout`, `ReadError`,
`RemoteProtocolError`); a slow reader holding the upstream back; `aclose`; the real
`openai.AsyncOpenAI` over `sdk_http_client`; proxies from the environment; an open stream
holding neither header block.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import httpx2
import multidict
import openai
import pytest
import trustme
import yarl
from aiohttp.client_proto import ResponseHandler
from streamgate.upstream_http import (
    HeadTemplate,
    UpstreamTransport,
    _BodyBuffer,
    _ChunkEnds,
    _lighten,
    _LightQueue,
    _ReadWatchdog,
    response_body,
    sdk_http_client,
)
from support import closed_port, settings
from wire_openai import SSE_HEAD, completion, http_chunk, split

pytestmark = pytest.mark.anyio

KEY = "sk-test-0123456789abcdef"
#: A 3 s budget whose read timeout (the longest wait for the next bytes) is 0.2 s.
READ_TIMEOUT_0_2 = httpx2.Timeout(3.0, read=0.2)
#: Headers that replace httpx2's defaults, so the request bytes are the same everywhere.
CLIENT_HEADERS = {"accept-encoding": "identity", "user-agent": "streamgate-test"}
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


# --- the upstream -------------------------------------------------------------------------

#: Answers one request (its exact bytes) on `writer`; returns whether to keep the connection.
Respond = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]


class Upstream:
    """An HTTP/1.1 server on 127.0.0.1 in the test's event loop: `respond` answers each
    request; `requests` holds their bytes, `accepts` counts connections and `eofs` the
    ones the client closed."""

    def __init__(self, respond: Respond, tls: ssl.SSLContext | None = None) -> None:
        self.respond = respond
        self.tls = tls
        self.requests: list[bytes] = []
        self.accepts = 0
        self.eofs = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Upstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts += 1
        self._tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while True:
                try:
                    request = await read_request(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.eofs += 1  # the client closed this connection
                    return
                self.requests.append(request)
                if not await self.respond(request, writer):
                    return
        except asyncio.CancelledError:
            pass  # the test is over (a cancelled callback task would be logged as an error)
        finally:
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and its `content-length` body, exactly as received."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


def answer(*replies: bytes, close: bool = False) -> Respond:
    """Send `replies[n]` for the n-th request (the last one again after that); then close
    the connection if `close`, else wait for the next request on it."""
    count = itertools.count()

    async def respond(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(replies[min(next(count), len(replies) - 1)])
        await writer.drain()
        return not close

    return respond


async def silent(request: bytes, writer: asyncio.StreamWriter) -> bool:
    """Never answer (and keep the connection open)."""
    return True


async def hang_up(request: bytes, writer: asyncio.StreamWriter) -> bool:
    """Close the connection without a byte of response."""
    return False


def sized(body: bytes, status: bytes = b"200 OK", headers: bytes = b"") -> bytes:
    """A whole `content-length` response."""
    return b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        status,
        len(body),
        headers,
        body,
    )


def chunked(*pieces: bytes, end: bool = True) -> bytes:
    """A `transfer-encoding: chunked` SSE response of `pieces` (without its last chunk if not `end`)."""
    return SSE_HEAD + b"".join(http_chunk(p) for p in pieces) + (b"0\r\n\r\n" if end else b"")


# --- helpers --------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy from the environment would carry the requests to 127.0.0.1."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
async def transport() -> AsyncIterator[UpstreamTransport]:
    transport = UpstreamTransport()
    yield transport
    await transport.aclose()


@pytest.fixture
async def http(transport: UpstreamTransport) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(transport=transport, headers=CLIENT_HEADERS, timeout=3.0) as client:
        yield client


async def eventually(condition: Callable[[], bool], within: float = 1.0) -> None:
    """Wait until `condition()` holds; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within} s")
        await asyncio.sleep(0.01)


@contextmanager
def raises_exactly(kind: type[Exception]) -> Iterator[pytest.ExceptionInfo[Exception]]:
    """`pytest.raises` that also fails on a subclass of `kind`: the SDKs map each type differently."""
    with pytest.raises(kind) as caught:
        yield caught
    assert caught.type is kind, repr(caught.value)


# --- requests and responses -------------------------------------------------------------------


async def streamed(data: bytes) -> AsyncIterator[bytes]:
    for piece in split(data, 3):
        yield piece


@pytest.mark.parametrize("content", [bytes, streamed], ids=["bytes", "streamed"])
async def test_chunked_response_and_the_exact_request_bytes(http: httpx2.AsyncClient, content: Any) -> None:
    body = b'{"model": "gpt-4o", "q": "\xc3\xa9"}'
    pieces = [b"data: 1\n\n", b'data: {"a": "\xe4\xb8\x96"}\n\n', b"data: [DONE]\n\n"]
    async with Upstream(answer(chunked(*pieces))) as upstream:
        request = http.build_request(
            "POST", upstream.url + "/v1/chat/completions?api-version=2024-10-21&q=a%20b", content=content(body)
        )
        response = await http.send(request, stream=True)
        received = [piece async for piece in response.aiter_raw()]
        await response.aclose()

    assert upstream.requests == [
        b"POST /v1/chat/completions?api-version=2024-10-21&q=a%%20b HTTP/1.1\r\n"
        b"Host: 127.0.0.1:%d\r\nAccept: */*\r\nConnection: keep-alive\r\n"
        b"accept-encoding: identity\r\nuser-agent: streamgate-test\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (upstream.port, len(body), body)
    ]  # a streamed body is sent whole with its length, never `transfer-encoding: chunked`
    assert response.status_code == 200 and response.http_version == "HTTP/1.1"
    assert response.headers.raw == [(b"content-type", b"text/event-stream"), (b"transfer-encoding", b"chunked")]
    assert b"".join(received) == b"".join(pieces)


async def test_open_sends_the_headers_given_in_their_order_host_first_and_the_body_once(
    transport: UpstreamTransport,
) -> None:
    """`UpstreamTransport.open` (the adapters' direct path): the headers as given, nothing
    of aiohttp's own (`User-Agent`, `Accept`...) but the URL's `Host` first when they have
    none and the body's `Content-Length`; an empty `GET` goes without a length."""
    async with Upstream(answer(sized(b"{}"), sized(b"{}"))) as upstream:
        timeout = transport.timeout({"connect": 1.0, "read": 1.0, "pool": 1.0})
        for method, body in (("POST", b'{"q": 1}'), ("GET", b"")):
            headers = multidict.CIMultiDict([("x-b", "2"), ("X-A", "1"), ("x-b", "3")])
            response = await transport.open(method, yarl.URL(upstream.url + "/v1/x?y=1"), headers, body, timeout)
            assert await response.aread() == b"{}"
    host = b"Host: 127.0.0.1:%d\r\n" % upstream.port
    assert upstream.requests == [
        b"POST /v1/x?y=1 HTTP/1.1\r\n" + host + b'x-b: 2\r\nX-A: 1\r\nx-b: 3\r\nContent-Length: 8\r\n\r\n{"q": 1}',
        b"GET /v1/x?y=1 HTTP/1.1\r\n" + host + b"x-b: 2\r\nX-A: 1\r\nx-b: 3\r\n\r\n",
    ]
    assert upstream.accepts == 1


async def test_a_head_template_goes_first_then_the_calls_own_headers_and_the_length(
    transport: UpstreamTransport,
) -> None:
    """`HeadTemplate` (the SDK's prepared headers, serialized once per request line): its
    headers first, in their order (the URL's `Host` before them when they have none), then
    the call's own and the body's `Content-Length`; another path or method has its own
    request line; a call's headers reach that call only."""
    template = HeadTemplate([("Authorization", "Bearer k"), ("x-b", "2"), ("X-A", "1")])
    async with Upstream(answer(sized(b"{}"))) as upstream:
        timeout = transport.timeout({"connect": 1.0, "read": 1.0, "pool": 1.0})
        calls = [
            ("POST", "/v1/x?y=1", [("x-call", "1")], b'{"q": 1}'),
            ("POST", "/v1/x?y=1", [], b"{}"),
            ("GET", "/v1/models", [], b""),
        ]
        for method, path, own, body in calls:
            url = yarl.URL(upstream.url + path)
            response = await transport.open(method, url, multidict.CIMultiDict(own), body, timeout, template)
            assert await response.aread() == b"{}"
    head = b"Host: 127.0.0.1:%d\r\nAuthorization: Bearer k\r\nx-b: 2\r\nX-A: 1\r\n" % upstream.port
    assert upstream.requests == [
        b"POST /v1/x?y=1 HTTP/1.1\r\n" + head + b'x-call: 1\r\nContent-Length: 8\r\n\r\n{"q": 1}',
        b"POST /v1/x?y=1 HTTP/1.1\r\n" + head + b"Content-Length: 2\r\n\r\n{}",
        b"GET /v1/models HTTP/1.1\r\n" + head + b"\r\n",
    ]
    assert upstream.accepts == 1


async def test_a_head_templates_own_host_is_sent_in_its_place(transport: UpstreamTransport) -> None:
    template = HeadTemplate([("accept", "*/*"), ("host", "api.example.test"), ("user-agent", "sdk")])
    async with Upstream(answer(sized(b"{}"))) as upstream:
        timeout = transport.timeout({"connect": 1.0, "read": 1.0, "pool": 1.0})
        url = yarl.URL(upstream.url + "/v1")
        response = await transport.open("GET", url, multidict.CIMultiDict(), b"", timeout, template)
        await response.aread()
    assert upstream.requests == [
        b"GET /v1 HTTP/1.1\r\naccept: */*\r\nhost: api.example.test\r\nuser-agent: sdk\r\n\r\n"
    ]


@pytest.mark.parametrize("where", ["template", "call"])
async def test_cr_or_lf_in_a_header_fails_every_call_before_connecting(
    transport: UpstreamTransport, where: str
) -> None:
    """A header aiohttp's serializer refuses fails each call that would send it, as
    `LocalProtocolError`, before a connection is taken: nothing reaches the upstream."""
    bad = [("x-key", "k\r\nx-injected: 1")]
    template = HeadTemplate(bad if where == "template" else [("x-ok", "1")])
    async with Upstream(answer(sized(b"{}"))) as upstream:
        timeout = transport.timeout({"connect": 1.0, "read": 1.0, "pool": 1.0})
        for _ in range(2):
            own = multidict.CIMultiDict(bad if where == "call" else [])
            with pytest.raises(httpx2.LocalProtocolError):
                await transport.open("POST", yarl.URL(upstream.url + "/v1"), own, b"{}", timeout, template)
    assert (upstream.accepts, upstream.requests) == (0, [])


async def test_an_open_stream_keeps_no_header_block_and_still_reads_and_pools(http: httpx2.AsyncClient) -> None:
    """`_forget_heads` and `_LightQueue`: once the `httpx2.Response` has the headers, the
    aiohttp response under an open stream drops both header blocks (and its parser its
    copies), and its body's and connection's queues are lists, not `deque`s; its body and
    its connection work as before."""
    pieces = [b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"]
    end = asyncio.Event()
    replies = iter([chunked(pieces[0], end=False), sized(b"{}")])

    async def respond(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(next(replies))
        if request.startswith(b"POST"):  # the rest once the test read the head: an open stream
            await end.wait()
            writer.write(http_chunk(pieces[1]) + http_chunk(pieces[2]) + b"0\r\n\r\n")
        await writer.drain()
        return True

    async with Upstream(respond) as upstream:
        request = http.build_request(
            "POST", upstream.url + "/v1/chat/completions", content=b"{}", headers={"authorization": f"Bearer {KEY}"}
        )
        response = await http.send(request, stream=True)
        body, release = response_body(response)
        held = response.extensions["streamgate.raw_stream"]._response
        assert (dict(held.request_info.headers), dict(held.headers), held.raw_headers) == ({}, {}, ())
        assert held.request_info.url == yarl.URL(upstream.url + "/v1/chat/completions")
        parser_lists = [f for f in gc.get_referents(held._protocol._parser) if type(f) is list]
        assert len(parser_lists) == 3 and not any(parser_lists)  # decoded and raw headers, pending messages
        queues = (held.content._buffer, held.content._http_chunk_splits, held._protocol._buffer)
        assert [type(queue).__name__ for queue in queues] == ["_BodyBuffer", "_ChunkEnds", "_LightQueue"]
        assert response.headers["transfer-encoding"] == "chunked"
        assert await anext(body) == pieces[0]
        end.set()
        assert b"".join([piece async for piece in body]) == b"".join(pieces[1:])
        await release()
        assert (await http.get(upstream.url)).content == b"{}"
        assert upstream.accepts == 1


async def test_content_length_response_to_a_get(http: httpx2.AsyncClient) -> None:
    body = b'{"error": {"message": "slow down"}}'
    async with Upstream(answer(sized(body, b"429 Too Many Requests", b"retry-after: 2\r\n"))) as upstream:
        response = await http.get(upstream.url + "/v1/models/gpt-4o?x=1")

    assert upstream.requests == [
        b"GET /v1/models/gpt-4o?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: */*\r\nConnection: keep-alive\r\n"
        b"accept-encoding: identity\r\nuser-agent: streamgate-test\r\n\r\n" % upstream.port
    ]  # no body, no content-length
    assert response.status_code == 429
    assert response.headers.raw == [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"retry-after", b"2"),
    ]
    assert response.content == body


async def test_head_with_a_content_length_has_no_body_and_keeps_the_connection(http: httpx2.AsyncClient) -> None:
    reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1234\r\n\r\n"
    async with Upstream(answer(reply, sized(b"{}"))) as upstream:
        started = time.monotonic()
        head = await http.head(upstream.url, timeout=3.0)
        assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "1234")
        assert time.monotonic() - started < 1.0  # not the read timeout
        assert (await http.get(upstream.url)).content == b"{}"
        assert upstream.accepts == 1


async def test_body_delimited_by_the_connection_closing_arrives_whole(http: httpx2.AsyncClient) -> None:
    """Neither a length nor chunked framing: the body ends when the connection does (RFC 9112 §6.3)."""
    reply = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nthe whole body"
    async with Upstream(answer(reply, close=True)) as upstream:
        first = await http.get(upstream.url)
        second = await http.get(upstream.url)

    assert (first.status_code, first.content, second.content) == (200, b"the whole body", b"the whole body")
    assert upstream.accepts == 2


# --- keep-alive ---------------------------------------------------------------------------


async def test_responses_read_to_their_end_share_one_connection(http: httpx2.AsyncClient) -> None:
    async with Upstream(answer(chunked(b"data: 1\n\n"), sized(b"{}"))) as upstream:
        first = await http.post(upstream.url + "/a", content=b"1")
        second = await http.post(upstream.url + "/b", content=b"2")
        third = await http.post(upstream.url + "/c", content=b"3")

    assert (first.content, second.content, third.content) == (b"data: 1\n\n", b"{}", b"{}")
    assert [r.split(b" ")[1] for r in upstream.requests] == [b"/a", b"/b", b"/c"]
    assert upstream.accepts == 1


async def test_response_closed_before_its_end_closes_its_connection(http: httpx2.AsyncClient) -> None:
    async with Upstream(answer(chunked(b"data: 1\n\n", end=False), sized(b"{}"))) as upstream:
        async with http.stream("GET", upstream.url) as response:
            async for piece in response.aiter_raw():
                assert piece == b"data: 1\n\n"
                break
        await eventually(lambda: upstream.eofs == 1)  # at once, not when the pool is closed

        assert (await http.get(upstream.url)).content == b"{}"
        assert upstream.accepts == 2


async def test_connection_close_from_the_server_is_not_reused(http: httpx2.AsyncClient) -> None:
    # the server keeps the connection open: only our side can decide not to reuse it
    async with Upstream(answer(sized(b"{}", headers=b"connection: close\r\n"))) as upstream:
        assert (await http.get(upstream.url)).content == b"{}"
        await eventually(lambda: upstream.eofs == 1)
        assert (await http.get(upstream.url)).content == b"{}"
        assert (upstream.accepts, len(upstream.requests)) == (2, 2)


async def test_idle_connection_the_server_closed_is_not_reused(http: httpx2.AsyncClient) -> None:
    async with Upstream(answer(sized(b"{}"), close=True)) as upstream:  # closed after each response
        assert (await http.get(upstream.url)).content == b"{}"
        await asyncio.sleep(0.05)  # our side notices the EOF
        assert (await http.get(upstream.url)).content == b"{}"
        assert upstream.accepts == 2


async def test_idle_connections_close_once_idle_past_the_expiry_without_a_new_request() -> None:
    transport = UpstreamTransport(keepalive_expiry=0.2)
    async with (
        httpx2.AsyncClient(transport=transport, headers=CLIENT_HEADERS) as http,
        Upstream(answer(chunked(b"data: 1\n\n"))) as upstream,
    ):
        await asyncio.gather(http.get(upstream.url), http.get(upstream.url))  # two idle now
        assert upstream.eofs == 0
        await eventually(lambda: upstream.eofs == 2, within=3.0)


async def test_expired_idle_connections_are_not_reused() -> None:
    transport = UpstreamTransport(keepalive_expiry=0.2)
    async with (
        httpx2.AsyncClient(transport=transport, headers=CLIENT_HEADERS) as http,
        Upstream(answer(chunked(b"data: 1\n\n"))) as upstream,
    ):
        assert (await http.get(upstream.url)).content == b"data: 1\n\n"
        await asyncio.sleep(0.3)
        assert (await http.get(upstream.url)).content == b"data: 1\n\n"
        assert upstream.accepts == 2
        await eventually(lambda: upstream.eofs == 1)


# --- TLS ------------------------------------------------------------------------------------


@pytest.fixture
def certificate_authority(tmp_path: Any) -> tuple[trustme.CA, str]:
    """A CA of our own, and its certificate as a file (for `SSL_CERT_FILE`)."""
    authority = trustme.CA()
    path = str(tmp_path / "ca.pem")
    authority.cert_pem.write_to_path(path)
    return authority, path


def server_tls(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def test_https_verifies_the_upstream_and_keeps_the_connection(
    certificate_authority: tuple[trustme.CA, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    authority, ca_file = certificate_authority
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)  # what httpx2.create_ssl_context() trusts
    async with (
        httpx2.AsyncClient(transport=UpstreamTransport(), headers=CLIENT_HEADERS) as http,
        Upstream(answer(chunked(b"data: 1\n\n")), tls=server_tls(authority)) as upstream,
    ):
        first = await http.post(upstream.url + "/v1/chat/completions", content=b"{}")
        second = await http.post(upstream.url + "/v1/chat/completions", content=b"{}")
    assert (first.status_code, first.content, second.content) == (200, b"data: 1\n\n", b"data: 1\n\n")
    assert upstream.accepts == 1  # one TLS handshake for both


async def test_https_to_an_untrusted_certificate_is_connect_error(
    certificate_authority: tuple[trustme.CA, str],
) -> None:
    authority, _ = certificate_authority  # its CA is not trusted here
    async with (
        httpx2.AsyncClient(transport=UpstreamTransport(), headers=CLIENT_HEADERS) as http,
        Upstream(answer(sized(b"{}")), tls=server_tls(authority)) as upstream,
    ):
        with raises_exactly(httpx2.ConnectError) as caught:
            await http.get(upstream.url)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert upstream.requests == []


# --- failures -----------------------------------------------------------------------------


async def test_connection_refused_is_connect_error(http: httpx2.AsyncClient) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    with raises_exactly(httpx2.ConnectError) as caught:
        await http.get(url)
    assert caught.value.request.url == url


async def test_no_answer_within_the_read_timeout_is_read_timeout(http: httpx2.AsyncClient) -> None:
    async with Upstream(silent) as upstream:
        started = time.monotonic()
        with raises_exactly(httpx2.ReadTimeout):
            await http.get(upstream.url, timeout=READ_TIMEOUT_0_2)
        assert 0.2 <= time.monotonic() - started < 1.0
        await eventually(lambda: upstream.eofs == 1)  # the connection was closed, not pooled


async def test_stall_mid_body_is_read_timeout(http: httpx2.AsyncClient) -> None:
    async with Upstream(answer(chunked(b"data: 1\n\n", end=False))) as upstream:
        received: list[bytes] = []
        async with http.stream("GET", upstream.url, timeout=READ_TIMEOUT_0_2) as response:
            with raises_exactly(httpx2.ReadTimeout):
                async for piece in response.aiter_raw():
                    received.append(piece)
        assert received == [b"data: 1\n\n"]
        await eventually(lambda: upstream.eofs == 1)


def watched_bodies() -> int:
    """Bodies `_ReadWatchdog` watches in this event loop."""
    loop = asyncio.get_running_loop()
    return sum(len(dog.bodies) for key, dog in _ReadWatchdog.running.items() if key[0] is loop)


async def watchdog_gone() -> None:
    """No body watched now, and the watchdog's timer stopped at its next tick (0.2 / 16 s)."""
    loop = asyncio.get_running_loop()
    assert watched_bodies() == 0
    await eventually(lambda: not [key for key in _ReadWatchdog.running if key[0] is loop])


def pieces_then(gaps: list[float], end: bool) -> Respond:
    """An SSE head, then one piece after each of `gaps` (s), then its end if `end`, else silence."""

    async def respond(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(SSE_HEAD)
        for n, gap in enumerate(gaps):
            await asyncio.sleep(gap)
            writer.write(http_chunk(b"data: %d\n\n" % n))
            await writer.drain()
        if end:
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    return respond


async def test_a_body_that_goes_silent_mid_stream_fails_within_the_read_timeout_and_one_tick(
    http: httpx2.AsyncClient,
) -> None:
    """Bytes every 0.1 s (each gap under the 0.2 s read timeout: no error), then silence:
    `_ReadWatchdog` fails the waiting read 0.2 s to 0.2 s + one tick (0.0125 s) later."""
    async with Upstream(pieces_then([0.0, 0.1, 0.1, 0.1], end=False)) as upstream:
        received: list[bytes] = []
        async with http.stream("GET", upstream.url, timeout=READ_TIMEOUT_0_2) as response:
            body, _ = response_body(response)
            with raises_exactly(httpx2.ReadTimeout):
                async for piece in body:
                    received.append(piece)
                    last = time.monotonic()
            waited = time.monotonic() - last
        assert b"".join(received) == b"data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n"
        assert 0.2 <= waited < 0.2 + 0.0125 + 0.05  # 0.05: the loop's own lateness
        await eventually(lambda: upstream.eofs == 1)  # the connection was closed, not pooled
    await watchdog_gone()


async def test_a_slow_consumer_does_not_trip_the_read_timeout(http: httpx2.AsyncClient) -> None:
    """Only a read waiting for the upstream counts: a consumer that holds a piece for 0.5 s
    (over the 0.2 s read timeout) while the upstream's next bytes are already there or
    come within 0.15 s gets the whole body."""
    async with Upstream(pieces_then([0.0, 0.15, 0.15], end=True)) as upstream:
        received: list[bytes] = []
        async with http.stream("GET", upstream.url, timeout=READ_TIMEOUT_0_2) as response:
            body, _ = response_body(response)
            async for piece in body:
                received.append(piece)
                await asyncio.sleep(0.5)  # the slow consumer (a client reading slowly)
        assert b"".join(received) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
        assert upstream.accepts == 1


async def test_bodies_leaving_every_way_leave_the_read_watchdog_empty(http: httpx2.AsyncClient) -> None:
    """Read to the end, closed mid-body, timed out, cancelled while waiting: no body stays
    registered and the watchdog's timer is gone with the last one."""
    async with Upstream(pieces_then([0.0, 0.05], end=False)) as upstream:

        async def one(n: int) -> None:
            async with http.stream("GET", upstream.url, timeout=READ_TIMEOUT_0_2) as response:
                body, release = response_body(response)
                if n % 4 == 0:  # closed mid-body
                    await body.__anext__()
                    await release()
                elif n % 4 == 1:  # cancelled while waiting for the upstream
                    reading = asyncio.ensure_future(body.__anext__())
                    await reading
                    reading = asyncio.ensure_future(body.__anext__())
                    await reading
                    reading = asyncio.ensure_future(body.__anext__())
                    await eventually(lambda: watched_bodies() > 0)
                    reading.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await reading
                else:  # timed out
                    with raises_exactly(httpx2.ReadTimeout):
                        async for _ in body:
                            pass

        await asyncio.gather(*(one(n) for n in range(40)))
        assert upstream.accepts == 40
    await watchdog_gone()


async def test_a_body_that_ends_in_an_error_leaves_the_read_watchdog_before_it_is_closed(
    http: httpx2.AsyncClient,
) -> None:
    async with Upstream(answer(chunked(b"data: 1\n\n", end=False), close=True)) as upstream:
        async with http.stream("GET", upstream.url, timeout=READ_TIMEOUT_0_2) as response:
            body, _ = response_body(response)
            with raises_exactly(httpx2.ReadError):
                async for _ in body:
                    pass
            assert watched_bodies() == 0


async def test_bodies_read_to_their_end_leave_the_read_watchdog_empty(http: httpx2.AsyncClient) -> None:
    async with Upstream(answer(chunked(b"data: 1\n\n", b"data: 2\n\n"))) as upstream:
        for _ in range(20):
            async with http.stream("GET", upstream.url, timeout=READ_TIMEOUT_0_2) as response:
                assert await response.aread() == b"data: 1\n\ndata: 2\n\n"
        assert upstream.accepts == 1
    await watchdog_gone()


@pytest.mark.parametrize(
    "partial",
    [
        chunked(b"data: 1\n\n", end=False),
        sized(b'{"a": 1}')[:-3],
        sized(b'{"a": 1}', headers=b"connection: close\r\n")[:-3],  # not read as a body that ends at the close
    ],
    ids=["chunked", "content-length", "content-length-connection-close"],
)
async def test_close_mid_body_is_read_error(http: httpx2.AsyncClient, partial: bytes) -> None:
    async with Upstream(answer(partial, close=True)) as upstream:
        async with http.stream("GET", upstream.url) as response:
            with raises_exactly(httpx2.ReadError):
                await response.aread()
        assert len(upstream.requests) == 1


@pytest.mark.parametrize(("method", "sent"), [("POST", 1), ("GET", 2)])
async def test_close_before_any_response_is_read_error(http: httpx2.AsyncClient, method: str, sent: int) -> None:
    """aiohttp sends an idempotent request once more on a new connection; never a POST."""
    async with Upstream(hang_up) as upstream:
        with raises_exactly(httpx2.ReadError):
            await http.request(method, upstream.url, content=b"{}" if method == "POST" else None)
        assert len(upstream.requests) == sent


async def test_garbage_instead_of_http_is_remote_protocol_error(http: httpx2.AsyncClient) -> None:
    # the server keeps the connection open: the error must come from the parser, not a close
    async with Upstream(answer(b"SSH-2.0-OpenSSH_9.6\r\n")) as upstream:
        with raises_exactly(httpx2.RemoteProtocolError):
            await http.get(upstream.url)
        await eventually(lambda: upstream.eofs == 1)


# --- flow control and closing ---------------------------------------------------------------


async def test_slow_reader_holds_the_upstream_back_and_gets_the_whole_body(http: httpx2.AsyncClient) -> None:
    body = random.Random(7).randbytes(32 * 1024 * 1024)
    written = 0

    async def fast(request: bytes, writer: asyncio.StreamWriter) -> bool:
        nonlocal written
        # A stream (an answer read whole is bounded: `MAX_WHOLE_BODY_BYTES`).
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n" % len(body))
        for piece in split(body, 64 * 1024):
            writer.write(piece)
            await writer.drain()
            written += len(piece)
        return True

    async with Upstream(fast) as upstream:
        async with http.stream("GET", upstream.url) as response:
            await asyncio.sleep(0.5)  # a reader that does not read
            assert written < len(body) // 2  # aiohttp stopped reading: the socket buffers filled up
            pieces = [piece async for piece in response.aiter_raw()]

    assert b"".join(pieces) == body
    assert upstream.accepts == 1


async def test_a_slow_reader_of_many_small_chunks_holds_the_upstream_back_and_gets_them_all(
    http: httpx2.AsyncClient,
) -> None:
    """`_BodyBuffer` and the chunk ends as a list under aiohttp's flow control: a reader
    that does not read stops aiohttp reading at its cap of buffered chunks; then the whole
    body arrives, in order, in fewer reads than chunks."""
    events = [b"data: %05d\n\n" % n for n in range(20_000)]

    async def fast(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(SSE_HEAD)
        for start in range(0, len(events), 500):
            writer.write(b"".join(http_chunk(event) for event in events[start : start + 500]))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async with Upstream(fast) as upstream:
        response = await http.send(http.build_request("POST", upstream.url, content=b"{}"), stream=True)
        held = response.extensions["streamgate.raw_stream"]._response
        await eventually(lambda: held._protocol._reading_paused)  # aiohttp stopped reading
        assert held.content.total_bytes < len(b"".join(events))
        body, release = response_body(response)
        reads = [piece async for piece in body]
        await release()
    assert b"".join(reads) == b"".join(events)
    assert len(reads) < len(events) // 10
    assert upstream.accepts == 1


async def test_aclose_closes_idle_pooled_connections(http: httpx2.AsyncClient, transport: UpstreamTransport) -> None:
    async with Upstream(answer(sized(b"{}"))) as upstream:
        assert (await http.get(upstream.url)).content == b"{}"
        await asyncio.sleep(0.05)
        assert upstream.eofs == 0  # kept for the next request

        await transport.aclose()
        await eventually(lambda: upstream.eofs == 1)


# --- through the openai SDK -------------------------------------------------------------------


TEXT = ["Hello", ", ", "世界", " 🙂🚀"]
MESSAGES = [{"role": "user", "content": "Hello"}]


def openai_client(url: str) -> openai.AsyncOpenAI:
    """Built as `providers/openai_stream.py` builds it, over `sdk_http_client`."""
    config = settings(upstream_timeout_s=3.0)
    return openai.AsyncOpenAI(api_key=KEY, base_url=url + "/v1", max_retries=0, http_client=sdk_http_client(config))


async def test_openai_sdk_streams_over_one_kept_alive_connection() -> None:
    reply = chunked(*split(completion(TEXT), 7))  # UTF-8 characters straddle the pieces
    async with Upstream(answer(reply)) as upstream, openai_client(upstream.url) as client:
        assert type(client._client._transport) is UpstreamTransport
        for _ in range(2):
            stream = await client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            chunks = [chunk async for chunk in stream]
            assert [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content] == TEXT
            assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 21

    assert upstream.accepts == 1  # the SDK drains the body after [DONE], so the connection is reused
    head, body = upstream.requests[0].split(b"\r\n\r\n", 1)
    request_line, *header_lines = head.split(b"\r\n")
    headers = {name.lower(): value for name, value in (line.split(b": ", 1) for line in header_lines)}
    assert request_line == b"POST /v1/chat/completions HTTP/1.1"
    assert headers[b"host"] == b"127.0.0.1:%d" % upstream.port
    assert headers[b"authorization"] == b"Bearer " + KEY.encode()
    assert headers[b"content-length"] == b"%d" % len(body) and b"transfer-encoding" not in headers
    assert json.loads(body) == {
        "model": "gpt-4o",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_openai_sdk_maps_a_status_and_a_refused_connection() -> None:
    error = json.dumps({"error": {"message": "Rate limit reached", "type": "requests", "code": None}}).encode()
    async with (
        Upstream(answer(sized(error, b"429 Too Many Requests"), sized(b'{"object": "list", "data": []}'))) as upstream,
        openai_client(upstream.url) as client,
    ):
        with raises_exactly(openai.RateLimitError) as caught:
            await client.models.list()
        assert caught.value.status_code == 429 and caught.value.message.endswith("Rate limit reached")
        assert (await client.models.list()).data == []
        assert upstream.accepts == 1  # the error body was read to its end: the connection was kept

    async with openai_client(f"http://127.0.0.1:{closed_port()}") as client:
        with raises_exactly(openai.APIConnectionError) as refused:
            await client.models.list()
    assert type(refused.value.__cause__) is httpx2.ConnectError


# --- sdk_http_client ------------------------------------------------------------------------


async def test_sdk_http_client_is_ours_with_the_upstream_timeout() -> None:
    async with sdk_http_client(settings(upstream_timeout_s=7.0)) as client:
        assert type(client._transport) is UpstreamTransport
        assert client.timeout == httpx2.Timeout(7.0)


async def proxy_answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(sized(b'{"via": "proxy"}'))
    await writer.drain()
    return True


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy"])
async def test_a_proxy_from_the_environment_carries_the_request(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    async with Upstream(proxy_answer) as proxy:
        monkeypatch.setenv(variable, proxy.url)
        async with httpx2.AsyncClient(transport=UpstreamTransport(), headers=CLIENT_HEADERS, trust_env=False) as http:
            response = await http.get("http://api.upstream.test/v1/models")
    assert response.content == b'{"via": "proxy"}'
    (request,) = proxy.requests
    assert request.startswith(b"GET http://api.upstream.test/v1/models HTTP/1.1\r\nHost: api.upstream.test\r\n")


async def test_a_proxy_carries_a_head_templates_request_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through a proxy the template's headers go as a call's own (aiohttp's proxy connection
    reads the request's headers): the absolute URL, `Host` first, then all in their order."""
    async with Upstream(proxy_answer) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        transport = UpstreamTransport()
        timeout = transport.timeout({"connect": 1.0, "read": 1.0, "pool": 1.0})
        template = HeadTemplate([("authorization", "Bearer k")])
        url = yarl.URL("http://api.upstream.test/v1/chat")
        response = await transport.open("POST", url, multidict.CIMultiDict(x_call="1"), b"{}", timeout, template)
        assert await response.aread() == b'{"via": "proxy"}'
        await transport.aclose()
    assert proxy.requests == [
        b"POST http://api.upstream.test/v1/chat HTTP/1.1\r\nHost: api.upstream.test\r\n"
        b"authorization: Bearer k\r\nx_call: 1\r\nContent-Length: 2\r\n\r\n{}"
    ]


def fed_reader(*pieces: bytes) -> aiohttp.StreamReader:
    """aiohttp's body reader (on a protocol with no connection) with `_BodyBuffer` as its
    buffer, fed `pieces` as the chunks of a chunked body."""
    loop = asyncio.get_running_loop()
    reader = aiohttp.StreamReader(ResponseHandler(loop), 2**16, loop=loop)
    _lighten(reader)
    reader.begin_http_chunk_receiving()
    for piece in pieces:
        reader.feed_data(piece)
        reader.end_http_chunk_receiving()
    return reader


async def test_a_body_buffer_joins_short_pieces_and_aiohttps_reader_still_counts_bytes() -> None:
    """`_BodyBuffer`: chunks that arrive together are one piece (one round of aiohttp's
    bookkeeping per read, not one per chunk) until it is `JOIN_BELOW` bytes long; reads
    of any size, and the chunk ends, are as aiohttp's own buffer gives them."""
    events = [b"data: %d\n\n" % n for n in range(50)]
    reader = fed_reader(*events)
    assert len(reader._buffer) == 1
    big = b"x" * _BodyBuffer.JOIN_BELOW
    reader.feed_data(big)  # joined to the short piece, which is then long enough
    reader.feed_data(b"tail")
    assert len(reader._buffer) == 2
    assert await reader.read(3) == b"dat"  # into the first piece
    reader.feed_data(b"more")
    assert await reader.readany() == b"".join(events)[3:] + big + b"tailmore"
    reader.feed_eof()
    assert (await reader.readany(), reader.total_bytes) == (b"", len(b"".join(events) + big) + 8)

    reader = fed_reader(*events[:3])
    assert [await reader.readchunk() for _ in range(3)] == [(event, True) for event in events[:3]]


async def test_a_body_read_with_its_head_is_joined_when_the_body_buffer_takes_over() -> None:
    """A short answer's whole body often comes in the read that brought its head: aiohttp
    buffers its chunks before `_lighten` runs, and they are joined then (one round of
    aiohttp's bookkeeping for the first read, not one per chunk), every byte and chunk
    end kept."""
    events = [b"data: %d\n\n" % n for n in range(12)]
    loop = asyncio.get_running_loop()
    reader = aiohttp.StreamReader(ResponseHandler(loop), 2**16, loop=loop)
    reader.begin_http_chunk_receiving()
    for event in events:
        reader.feed_data(event)
        reader.end_http_chunk_receiving()
    assert len(reader._buffer) == len(events)
    _lighten(reader)
    assert type(reader._buffer) is _BodyBuffer and len(reader._buffer) == 1
    assert list(reader._http_chunk_splits) == list(itertools.accumulate(map(len, events)))
    assert await reader.readany() == b"".join(events)


async def test_a_read_past_many_chunk_ends_drops_them_at_once_and_reads_every_byte() -> None:
    """`_ChunkEnds`: aiohttp drops the chunk ends a read passed one `popleft` at a time; on
    more than `KEEP` that is one cut keeping the newest (not a move of the rest per end:
    ~5 ms for aiohttp's cap of 4,096), and the read still gets every byte."""
    events = [b"data: %04d\n\n" % n for n in range(4096)]
    reader = fed_reader(*events)
    assert len(reader._http_chunk_splits) == 4096
    assert await reader.readany() == b"".join(events)
    assert reader._http_chunk_splits == [reader.total_bytes]  # the last end, where the read stopped
    ends = _ChunkEnds(range(100))
    while ends[0] < 50:  # as aiohttp's `_read_nowait_chunk` drops the passed ends
        ends.popleft()
    assert ends == list(range(100 - _ChunkEnds.KEEP + 1, 100))


def test_a_light_queue_is_first_in_first_out_from_both_ends() -> None:
    """`_LightQueue` stands for aiohttp's `deque`s: `append`/`popleft` are a queue,
    `appendleft` puts an item back in front."""
    queue = _LightQueue()
    queue.append(b"a")
    queue.append(b"b")
    queue.appendleft(b"z")
    assert (queue[0], queue[-1], len(queue)) == (b"z", b"b", 3)
    assert [queue.popleft() for _ in range(3)] == [b"z", b"a", b"b"]
    assert not queue
    with pytest.raises(IndexError):
        queue.popleft()


def test_an_aiohttp_whose_body_reader_calls_more_of_a_deque_fails_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """`_LightQueue` lacks `rotate`, `extendleft`, `maxlen`: an aiohttp release whose
    reader or answer queue calls one is refused when the transport is made."""
    from aiohttp import streams
    from streamgate.sdk_internals import SDKMismatchError

    def unread_many(self: Any, chunks: list[bytes]) -> None:
        self._buffer.extendleft(chunks)

    monkeypatch.setattr(streams.StreamReader, "unread_many", unread_many, raising=False)
    with pytest.raises(SDKMismatchError, match=r"^aiohttp .* has no StreamReader calling deque's extendleft;"):
        UpstreamTransport()


async def test_no_proxy_in_the_environment_goes_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    async with Upstream(proxy_answer) as proxy, Upstream(answer(sized(b"{}"))) as upstream:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with httpx2.AsyncClient(transport=UpstreamTransport(), headers=CLIENT_HEADERS, trust_env=False) as http:
            assert (await http.get(upstream.url)).content == b"{}"
    assert (proxy.requests, len(upstream.requests)) == ([], 1)
