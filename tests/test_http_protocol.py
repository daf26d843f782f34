"""http_protocol: uvicorn's httptools protocol with lighter containers behaves as uvicorn's —
pipelined requests answered in order, a slow reader holding the app's sends back, a client
that leaves seen as `http.disconnect`, `100-continue`, keep-alive, the proxy headers — and
a response's head held for the body that follows it in the same turn of the loop, over
raw sockets, under both event loops; and the start-up check of the uvicorn internals it uses."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from streamgate import http_protocol
from streamgate.http_protocol import HttpProtocol, Pipeline, ProxyHeaders
from streamgate.sdk_internals import SDKMismatchError
from support import served

Handler = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
LOOPS = ["asyncio", "uvloop"]


def asgi(handler: Handler) -> Callable[..., Awaitable[None]]:
    """An ASGI app: `handler` for HTTP requests, the lifespan answered."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await handler(scope, receive, send)

    return app


async def answer(send: Any, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    """In the server's loop: wait for `condition`, checked every millisecond."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition was never met"
        await asyncio.sleep(0.001)


def the_connection(server: uvicorn.Server) -> HttpProtocol:
    (connection,) = server.server_state.connections
    assert isinstance(connection, HttpProtocol)
    return connection


@contextmanager
def connected(handler: Handler, loop: str, **options: int) -> Iterator[tuple[socket.socket, uvicorn.Server]]:
    """`handler` served under `loop`, and a raw socket connected to it."""
    with served(asgi(handler), loop) as (url, server):
        port = int(url.rsplit(":", 1)[1])
        with socket.socket() as client:
            for option, value in options.items():
                client.setsockopt(socket.SOL_SOCKET, getattr(socket, option), value)
            client.settimeout(10)
            client.connect(("127.0.0.1", port))
            yield client, server


def read_until(client: socket.socket, end: bytes, received: bytes = b"") -> bytes:
    while end not in received:
        data = client.recv(65536)
        assert data, f"the connection closed before {end!r}: {received!r}"
        received += data
    return received


@pytest.mark.parametrize("loop", LOOPS)
def test_pipelined_requests_are_queued_and_answered_in_order(loop: str) -> None:
    """Three requests in one write: the first is answered only once the other two are
    queued (in the connection's `Pipeline`), and the answers come in the requests' order."""
    queued: list[int] = []

    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/1":
            connection = the_connection(server)
            await until(lambda: len(connection.pipeline) == 2)
            assert type(connection.pipeline) is Pipeline
            queued.append(len(connection.pipeline))
        await answer(send, scope["path"].encode())

    with connected(handler, loop) as (client, server):
        client.sendall(b"".join(b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % n for n in (1, 2, 3)))
        received = read_until(client, b"/3")
        # keep-alive: the connection serves another request once the pipeline is drained
        client.sendall(b"GET /4 HTTP/1.1\r\nHost: t\r\n\r\n")
        received = read_until(client, b"/4", received)
    assert queued == [2]
    assert [part[-2:] for part in received.split(b"HTTP/1.1 200 OK")[1:]] == [b"/1", b"/2", b"/3", b"/4"]


@pytest.mark.parametrize("loop", LOOPS)
def test_a_slow_reader_holds_the_app_s_sends_back_until_it_reads(loop: str) -> None:
    """The client reads nothing: the app's `send` waits on the connection's writable
    event (its one waiter, in a list) with most of the body unsent; once the client
    reads, every byte arrives."""
    chunk, chunks = b"x" * 65536, 256
    progress = {"sent": 0, "waiters": 0}

    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        size = b"%d" % (len(chunk) * chunks)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", size)]})
        for _ in range(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            progress["sent"] += 1
        await send({"type": "http.response.body", "body": b""})

    with connected(handler, loop, SO_RCVBUF=4096) as (client, server):
        client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        connection = None
        deadline = time.monotonic() + 10
        while connection is None or not connection.flow.write_paused:
            assert time.monotonic() < deadline, "the server never stopped writing"
            connections = server.server_state.connections
            connection = next(iter(connections)) if connections else None  # type: ignore[assignment]
            time.sleep(0.001)
        assert connection is not None
        waiters = connection.flow._is_writable_event._waiters  # type: ignore[attr-defined]
        while not waiters:  # the app's send has reached the wait
            assert time.monotonic() < deadline, "the app's send never waited"
            time.sleep(0.001)
        assert type(waiters) is list and len(waiters) == 1
        held_at = progress["sent"]
        assert held_at < chunks // 2
        head = read_until(client, b"\r\n\r\n")
        body_size = len(head) - head.index(b"\r\n\r\n") - 4
        while body_size < len(chunk) * chunks:
            data = client.recv(1 << 20)
            assert data, "the body was cut"
            body_size += len(data)
    assert body_size == len(chunk) * chunks
    assert progress["sent"] == chunks


@pytest.mark.parametrize("loop", LOOPS)
def test_a_client_that_leaves_is_an_http_disconnect_to_a_waiting_receive(loop: str) -> None:
    """The app waits in `receive()` (on the request's message event, its waiter in a list)
    after the body; the client closes: the wait ends with `http.disconnect`."""
    seen: list[str] = []
    waiting = threading.Event()
    done = threading.Event()

    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert (await receive())["body"] == b"hi"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        cycle = the_connection(server).cycle
        receiving = asyncio.ensure_future(receive())
        await until(lambda: bool(cycle.message_event._waiters))  # type: ignore[attr-defined]
        seen.append(type(cycle.message_event._waiters).__name__)  # type: ignore[attr-defined]
        waiting.set()
        seen.append((await receiving)["type"])
        done.set()

    with connected(handler, loop) as (client, server):
        client.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi")
        assert waiting.wait(10)
        client.close()
        assert done.wait(10)
    assert seen == ["list", "http.disconnect"]


@pytest.mark.parametrize("loop", LOOPS)
def test_100_continue_is_sent_when_the_app_asks_for_the_body(loop: str) -> None:
    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message["body"]
            if not message["more_body"]:
                break
        await answer(send, body[::-1])

    with connected(handler, loop) as (client, _):
        client.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        assert read_until(client, b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.sendall(b"ab")
        client.sendall(b"cde")
        assert read_until(client, b"edcba").startswith(b"HTTP/1.1 200 OK\r\n")


CHUNKED_HEAD = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}


@pytest.mark.parametrize("loop", LOOPS)
def test_a_head_goes_out_with_the_body_sent_in_the_same_turn_of_the_loop(loop: str) -> None:
    """The app works 50 ms between its head and its first body, without yielding to the
    loop: a head written at once would reach the client alone; held, it comes in the
    same read as the body. The next body goes out alone."""

    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(CHUNKED_HEAD)
        time.sleep(0.05)
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"second"})

    with connected(handler, loop) as (client, _):
        client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        first_read = client.recv(65536)
        assert first_read.startswith(b"HTTP/1.1 200 OK\r\n")
        assert first_read.endswith(b"\r\n\r\n5\r\nfirst\r\n")
        assert read_until(client, b"0\r\n\r\n") == b"6\r\nsecond\r\n0\r\n\r\n"


@pytest.mark.parametrize("loop", LOOPS)
def test_a_head_whose_body_is_not_ready_goes_out_alone_on_the_loop_s_next_turn(loop: str) -> None:
    """The app waits (as a stream waits on its upstream) until the client has the head."""
    head_received = threading.Event()

    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(CHUNKED_HEAD)
        await until(head_received.is_set)
        await send({"type": "http.response.body", "body": b"late"})

    with connected(handler, loop) as (client, _):
        client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        head = read_until(client, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
        head_received.set()
        assert read_until(client, b"0\r\n\r\n") == b"4\r\nlate\r\n0\r\n\r\n"


@pytest.mark.parametrize("loop", LOOPS)
def test_a_held_head_is_written_before_the_connection_is_closed(loop: str) -> None:
    """The app fails right after its head: uvicorn closes the connection in the same turn,
    and the client still gets the head, then the end of the connection."""

    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(CHUNKED_HEAD)
        raise RuntimeError("the app failed after its head")

    with connected(handler, loop) as (client, _):
        client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        received = read_until(client, b"\r\n\r\n")
        while data := client.recv(65536):
            received += data
    assert received.startswith(b"HTTP/1.1 200 OK\r\n") and received.endswith(b"transfer-encoding: chunked\r\n\r\n")


def test_the_proxy_headers_are_applied_and_the_app_is_awaited_by_uvicorn_s_task_itself() -> None:
    """From 127.0.0.1 (trusted by default) `X-Forwarded-Proto` and `-For` set the scope's
    scheme and client, as uvicorn's middleware does; no middleware coroutine stays between
    uvicorn's `run_asgi` and the app while it runs."""
    seen: dict[str, Any] = {}

    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        looked = asyncio.get_running_loop().create_future()

        def look() -> None:  # while this handler waits: what uvicorn's `run_asgi` awaits
            seen["awaited by run_asgi"] = task.get_coro().cr_await.cr_code.co_name  # type: ignore[union-attr]
            looked.set_result(None)

        asyncio.get_running_loop().call_soon(look)
        await looked
        seen["scheme"], seen["client"] = scope["scheme"], scope["client"]
        seen["app"] = type(the_connection(server).app)
        await answer(send, b"ok")

    with connected(handler, "uvloop") as (client, server):
        client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-Proto: https\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n")
        read_until(client, b"ok")
    assert seen == {"awaited by run_asgi": "app", "scheme": "https", "client": ("203.0.113.7", 0), "app": ProxyHeaders}


def test_the_installed_uvicorn_has_what_the_protocol_relies_on() -> None:
    http_protocol.require_uvicorn_internals()


def test_a_uvicorn_whose_flow_control_has_no_writable_event_fails_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    class Renamed:
        def __init__(self, transport: object) -> None:
            self._writable = asyncio.Event()

    monkeypatch.setattr(http_protocol, "FlowControl", Renamed)
    with pytest.raises(SDKMismatchError, match=r"^uvicorn \S+ has no FlowControl._is_writable_event"):
        http_protocol.require_uvicorn_internals()


def test_a_uvicorn_whose_request_cycle_takes_no_message_event_fails_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Renamed:
        def __init__(self, scope: object, received: object) -> None:
            pass

    monkeypatch.setattr(http_protocol, "RequestResponseCycle", Renamed)
    with pytest.raises(SDKMismatchError, match=r"^uvicorn \S+ has no message_event argument of RequestResponseCycle"):
        http_protocol.require_uvicorn_internals()


def test_an_asyncio_event_without_a_deque_of_waiters_fails_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    class Other(asyncio.Event):
        def __init__(self) -> None:
            super().__init__()
            del self._waiters  # type: ignore[attr-defined]
            self._futures: list[asyncio.Future[Any]] = []

    monkeypatch.setattr(http_protocol.asyncio, "Event", Other)
    with pytest.raises(SDKMismatchError, match="asyncio.Event keeps no deque of waiters"):
        http_protocol.require_uvicorn_internals()


def test_pipeline_keeps_uvicorn_s_deque_order_and_holds_no_deque_while_empty() -> None:
    """`appendleft` then `pop` is first in, first out, as on uvicorn's deque; the deque
    exists only while a request waits."""
    pipeline = Pipeline()
    assert not pipeline and pipeline.waiting is None
    for request in ("first", "second", "third"):
        pipeline.appendleft(request)
    assert len(pipeline) == 3
    assert [pipeline.pop(), pipeline.pop(), pipeline.pop()] == ["first", "second", "third"]
    assert not pipeline and pipeline.waiting is None
    with pytest.raises(IndexError):
        pipeline.pop()


def test_a_uvicorn_whose_proxy_headers_middleware_keeps_its_app_elsewhere_fails_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Renamed:
        def __init__(self, app: object, trusted_hosts: object = "127.0.0.1") -> None:
            self.inner = app

    monkeypatch.setattr(http_protocol, "ProxyHeadersMiddleware", Renamed)
    with pytest.raises(SDKMismatchError, match=r"^uvicorn \S+ has no ProxyHeadersMiddleware.app"):
        http_protocol.require_uvicorn_internals()
