"""uvicorn's httptools protocol with lighter objects per connection and per request.

`HttpProtocol` is uvicorn's `HttpToolsProtocol` (server.py passes it as `Config(http=...)`)
and behaves as it does — pipelining, flow control, disconnects, `100-continue`, keep-alive,
shutdown, the proxy headers are uvicorn's own code — but what each connection and request
keeps for as long as a stream is open is made smaller:
- three `deque`s: the queue of pipelined requests (one per connection, in use only when a
  client pipelines) and the waiters of two `asyncio.Event`s (the connection's "writable"
  event, the request's "message" event). An empty `deque` allocates its first 64-slot block
  at once (past pymalloc's 512-byte limit, so from malloc). The queue's `deque` is made only
  while a request waits in it (`Pipeline`); the waiters (asyncio's `Event` only appends,
  removes and iterates them, and rarely holds more than one) are a list, which holds no
  block while empty.
- a response's head and its first body go out in one system call (`HeldHead`): uvicorn
  writes the head as soon as the app sends it, and the body in a write of its own, though
  most responses' bodies follow in the same turn of the event loop (a short stream's every
  frame, a JSON answer). The head waits for the next write, or for the loop's next turn
  if none comes in this one (a stream waiting on its upstream); a body never waits.
- uvicorn's `ProxyHeadersMiddleware` (on by default) is a coroutine awaiting the app, kept
  suspended for the whole response: `ProxyHeaders` runs the same middleware's code to
  rewrite the scope, then hands the app's awaitable to uvicorn's task itself.

The README's "Why a request's path is built as it is" has the figures.

The uvicorn internals this relies on are named in `sdk_internals.PRIVATE_MEMBERS` and
checked, with the ones only an instance shows, by `require_uvicorn_internals()` when this
module is imported (the server's start-up): a uvicorn release that renamed one fails
loudly then, not on a request.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import weakref
from collections import deque
from collections.abc import Awaitable, Generator
from typing import Any

from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.config import Config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from .sdk_internals import SDKMismatchError, mismatch, require_private_members


class Pipeline:
    """The requests a client pipelined behind the one being answered, in a `deque` as
    uvicorn keeps them (`appendleft` the newest, `pop` the oldest), made only while one
    waits: most connections never pipeline."""

    __slots__ = ("waiting",)

    def __init__(self) -> None:
        self.waiting: deque[Any] | None = None

    def __len__(self) -> int:
        return len(self.waiting) if self.waiting is not None else 0

    def appendleft(self, item: Any) -> None:
        if self.waiting is None:
            self.waiting = deque()
        self.waiting.appendleft(item)

    def pop(self) -> Any:
        if self.waiting is None:
            raise IndexError("pop from an empty pipeline")
        item = self.waiting.pop()
        if not self.waiting:
            self.waiting = None
        return item


def with_list_waiters(event: asyncio.Event) -> asyncio.Event:
    """`event`, its waiters kept in a list (asyncio's `Event` only appends, removes and
    iterates them). Called on a fresh event, before anything waits on it."""
    event._waiters = []  # type: ignore[assignment]
    return event


class _Done:
    """An awaitable that is done at once, without a coroutine."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]


_DONE = _Done()


def _done(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> _Done:
    return _DONE


class ProxyHeaders:
    """uvicorn's `ProxyHeadersMiddleware` returning the app's awaitable instead of a
    coroutine that awaits it (and stays suspended while the response streams).
    The scope is rewritten by the middleware's own code (`client` and `scheme` from a
    trusted proxy's `X-Forwarded-For` and `-Proto`): its coroutine, over an app that is done
    at once, is stepped to its end here. The app is reached through the middleware, held
    weakly: `_PROXY_HEADERS` keeps this as long as its server's middleware lives, and must
    not keep a stopped server's app (a cycle, as Starlette's are) past the collection that
    frees the server."""

    __slots__ = ("rewrite", "middleware")

    def __init__(self, middleware: ProxyHeadersMiddleware) -> None:
        self.middleware = weakref.ref(middleware)
        self.rewrite = copy.copy(middleware)
        self.rewrite.app = _done

    def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> Awaitable[None]:
        rewriting = self.rewrite(scope, receive, send)
        try:
            rewriting.send(None)
        except StopIteration:
            middleware = self.middleware()
            assert middleware is not None  # a connection's protocol holds its config, which holds it
            return middleware.app(scope, receive, send)
        rewriting.close()
        raise mismatch("uvicorn", "ProxyHeadersMiddleware that is done when its app is")


#: Each server's `ProxyHeadersMiddleware` (its `Config.loaded_app`) and its `ProxyHeaders`.
_PROXY_HEADERS: weakref.WeakKeyDictionary[ProxyHeadersMiddleware, ProxyHeaders] = weakref.WeakKeyDictionary()


class HeldHead:
    """A request cycle's transport until its first write is out: that write (the response's
    head, or a `100 Continue`) is held until the cycle's next write, which carries it in the
    same system call, or until the event loop's next turn, whichever comes first; a close
    writes it first. Then the cycle has the connection's transport back, so an open stream
    keeps nothing of this, and no later write passes through here."""

    __slots__ = ("cycle", "transport", "loop", "held")

    def __init__(
        self, cycle: RequestResponseCycle, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.cycle = cycle
        self.transport = transport
        self.loop = loop
        self.held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self.held
        if held is None:
            self.held = data
            self.loop.call_soon(self.flush)
            return
        self.held = None
        self.cycle.transport = transport = self.transport
        transport.write(held + data)

    def flush(self) -> None:
        """Write what is held (the loop's next turn came first)."""
        held = self.held
        if held is None:
            return
        self.held = None
        self.cycle.transport = transport = self.transport
        if not transport.is_closing():
            transport.write(held)

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        self.flush()
        self.transport.close()


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; the module's docstring says what differs and why."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.pipeline = Pipeline()  # type: ignore[assignment]
        app = self.app
        if type(app) is ProxyHeadersMiddleware:
            proxy_headers = _PROXY_HEADERS.get(app)
            if proxy_headers is None:
                proxy_headers = _PROXY_HEADERS[app] = ProxyHeaders(app)
            self.app = proxy_headers

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        with_list_waiters(self.flow._is_writable_event)

    def on_headers_complete(self) -> None:
        cycle = self.cycle
        super().on_headers_complete()
        if self.cycle is not cycle:  # a new request (not a WebSocket upgrade): nothing waits on it yet
            with_list_waiters(self.cycle.message_event)
            self.cycle.transport = HeldHead(self.cycle, self.transport, self.loop)  # type: ignore[assignment]


def require_uvicorn_internals() -> None:
    """Raise `SDKMismatchError` unless uvicorn (and asyncio) still have what `HttpProtocol`
    relies on: the members `PRIVATE_MEMBERS` lists, `FlowControl._is_writable_event`,
    `RequestResponseCycle`'s `message_event` and `transport`, `ProxyHeadersMiddleware.app`, and an
    `asyncio.Event` keeping its waiters in a `deque` named `_waiters`."""
    require_private_members(["uvicorn"])
    if not isinstance(getattr(asyncio.Event(), "_waiters", None), deque):
        raise SDKMismatchError(
            "this Python's asyncio.Event keeps no deque of waiters in `_waiters`; streamgate's "
            "http_protocol.py must be adapted to it"
        )
    event = getattr(FlowControl(None), "_is_writable_event", None)  # type: ignore[arg-type]
    if not isinstance(event, asyncio.Event):
        raise mismatch("uvicorn", "FlowControl._is_writable_event (an asyncio.Event)")
    for argument in ("message_event", "transport"):
        if argument not in inspect.signature(RequestResponseCycle).parameters:
            raise mismatch("uvicorn", f"{argument} argument of RequestResponseCycle")
    if getattr(ProxyHeadersMiddleware(_done), "app", None) is not _done:
        raise mismatch("uvicorn", "ProxyHeadersMiddleware.app")


require_uvicorn_internals()
