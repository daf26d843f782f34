"""The one request pipeline every dialect shares: decode → pick adapter → open upstream →
frame → send.

Each dialect (`dialects/`) decodes its own request shape into a `Call` and brings its own
`Frames`; everything between the decoded request and the bytes on the wire is here, once:
the body cap, the field-naming validation errors, opening the upstream, the sinks (the
client, or a resumable stream's log in `resume.py`), the stream pump with heartbeats and
the disconnect watcher, the non-streaming collector and the request log.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Protocol

import anyio
import msgspec
from starlette.types import Message, Receive, Scope, Send

from . import metrics, sse, timing
from .adapter import ChunkStream
from .callers import CALLER, Caller, Lease
from .chat_types import (
    FinishReason,
    FunctionCall,
    RawEvent,
    ReasoningChunk,
    SignatureChunk,
    StreamChunk,
    ToolCall,
    ToolCallChunk,
    Usage,
    json_encoder,
)
from .errors import (
    BodyTooLargeError,
    GatewayError,
    InvalidJSONError,
    InvalidRequestError,
    ShuttingDownError,
    UpstreamError,
)
from .json_depth import MAX_DEPTH, too_deep
from .settings import Settings

log = logging.getLogger("streamgate")
#: One line per chat request at its end (`ACCESS_LOG`), never one per frame.
access_log = logging.getLogger("streamgate.access")

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
JSON_HEADERS = [(b"content-type", b"application/json")]
#: The head of a stream sent straight to the client (`stream_to_client`).
SSE_HEAD: Message = {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS}


# --- decode ---------------------------------------------------------------------------


class ClientGone(Exception):
    """The client disconnected before its request body was read."""


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """Read the request body, refusing (413) as soon as it passes `limit` bytes."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise BodyTooLargeError(f"the request body is over MAX_BODY_BYTES ({limit} bytes)")
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise BodyTooLargeError(f"the request body is over MAX_BODY_BYTES ({limit} bytes)")
        parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)


def decode_json(body: bytes, decoder: msgspec.json.Decoder[Any]) -> Any:
    """Decode `body` with `decoder`; a failure names the field at fault (`$.messages[0].role`).
    The depth is scanned only when the body opens more than `MAX_DEPTH` objects and arrays."""
    if not body.strip():
        raise InvalidJSONError("the request body is empty; send a JSON object")
    if too_deep(body):
        raise InvalidJSONError(f"the request body is nested deeper than {MAX_DEPTH} levels of objects and arrays")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as error:
        message = validation_message(str(error))
        if message.partition(": ")[2].startswith(("Invalid enum value", "Invalid value")):
            choices = enum_choices(decoder.type, message.partition(":")[0])
            if choices:
                message += f"; valid: {', '.join(choices)}"
        raise InvalidRequestError(message) from None
    except msgspec.DecodeError as error:
        raise InvalidJSONError(f"the request body is not valid JSON: {error}") from None


def enum_choices(root: Any, path: str) -> list[str]:
    """The values a field of `root`'s type at `path` (`$.messages[0].role`) may take: its
    `Literal` or enum values, or the tags of a tagged union's members; empty if none."""
    types = [msgspec.inspect.type_info(root)]
    for step in re.findall(r"\.(\w+)|\[\d+\]", path):
        types = [child for kind in types for child in _children(kind, step)]
    values: list[str] = []
    for kind in types:
        for member in _members(kind):
            if isinstance(member, msgspec.inspect.LiteralType):
                values += [str(value) for value in member.values]
            elif isinstance(member, msgspec.inspect.EnumType):
                values += [str(item.value) for item in member.cls]
            elif isinstance(member, msgspec.inspect.StructType) and member.tag is not None:
                values.append(str(member.tag))
    return list(dict.fromkeys(values))


def _members(kind: msgspec.inspect.Type) -> list[msgspec.inspect.Type]:
    return list(kind.types) if isinstance(kind, msgspec.inspect.UnionType) else [kind]


def _children(kind: msgspec.inspect.Type, step: str) -> list[msgspec.inspect.Type]:
    """The types one path step (a field name, or `""` for a list index) below `kind`."""
    children: list[msgspec.inspect.Type] = []
    for member in _members(kind):
        if step and isinstance(member, msgspec.inspect.StructType):
            children += [field.type for field in member.fields if field.encode_name == step]
            if member.tag_field == step:
                children.append(msgspec.inspect.LiteralType((member.tag,)))
        elif not step and isinstance(member, (msgspec.inspect.ListType, msgspec.inspect.TupleType)):
            children.append(member.item_type if isinstance(member, msgspec.inspect.ListType) else member.item_types[0])
    return children


def validation_message(text: str) -> str:
    """Turn msgspec's wording into `<path>: <problem>`, with the path always present."""
    problem, _, where = text.partition(" - at `")
    path = where.rstrip("`") or "$"
    missing = "Object missing required field `"
    if problem.startswith(missing):
        field = problem[len(missing) :].rstrip("`")
        return f"{path}.{field}: required field is missing"
    return f"{path}: {problem}"


# --- frame -----------------------------------------------------------------------------


class Frames(Protocol):
    """One output dialect: how chunks, the end and a failure become bytes on the wire."""

    def content(self, chunk: StreamChunk) -> bytes: ...

    def reasoning(self, chunk: ReasoningChunk) -> bytes: ...

    def tool_call(self, chunk: ToolCallChunk) -> bytes: ...

    def signature(self, chunk: SignatureChunk) -> bytes:
        """The reasoning's signature; `b""` in a dialect that cannot carry it."""
        ...

    def raw(self, chunk: RawEvent) -> bytes:
        """A passthrough's event as it came (only a dialect with a passthrough gets one)."""
        ...

    def final(self, chunk: StreamChunk) -> bytes: ...

    def failure(self, error: GatewayError, final_sent: bool, usage: Usage | None) -> bytes: ...

    def done(self) -> bytes: ...

    # Optional: `serve(provider, model)`, called before the first frame when a route's
    # target other than the one the frames were made for serves the call (`Call.serve`),
    # so that frames naming the model name the one that served.


# --- send -----------------------------------------------------------------------------


class StreamProgress(timing.RequestTiming):
    """What the watcher and the pump of one stream share (and metrics and the request log
    read at its end), with the request's timestamps (`RequestTiming`)."""

    __slots__ = (
        "last_sent_at",
        "frames_sent",
        "first_token_at",
        "streaming",
        "error_type",
        "client_gone",
        "status",
        "usage",
        "stream_id",
        "stop_error",
        "finish_reason",
        "handed_over",
    )

    def __init__(self) -> None:
        self.last_sent_at = time.monotonic()
        super().__init__(self.last_sent_at)
        self.first_token_at: float | None = None
        self.frames_sent = 0
        self.streaming = False
        self.error_type: str | None = None  # the `type` of the error the client got, if any
        self.client_gone = False
        self.status: int | None = None  # the HTTP status sent, once sent
        self.usage: Usage | None = None  # the usage the answer reported, at its end
        self.finish_reason: FinishReason | None = None  # the answer's, at its end
        self.stream_id: str | None = None  # a resumable stream's `X-Stream-Id`
        #: Why the stream is being cancelled when it is not the client leaving: a `DELETE`
        #: (`cancelled`); unset, the server is shutting down.
        self.stop_error: GatewayError | None = None
        self.handed_over = False  # a sink took the stream over (`run_chat`)

    def hand_over(self) -> None:
        """What a sink calls when it takes the stream over (`Sink`'s `handed_over`)."""
        self.handed_over = True


class ClientWatch:
    """`async with ClientWatch(...)` around a request's work: the work is cancelled as soon
    as the client disconnects (also while the upstream is silent), and `: keep-alive` is
    sent after `heartbeat_s` without a frame. Leaving the block stops both; the
    cancellation the disconnect caused ends the block quietly.

    Neither a task nor a timer of its own, nor an anyio task group or a timeout per wait:
    each costs memory per open stream (docs/BENCHMARKS.md). The server's `receive()` is
    stepped by hand, from the done callback of the future it waits on (`_step`), and one
    timer per event loop serves every stream's keep-alives (`Heartbeats`). A keep-alive is
    sent by a task of its own, made only when one is due (the frames' own sends go on
    meanwhile).
    """

    __slots__ = ("receive", "send", "progress", "heartbeat_s", "work", "receiving", "heartbeats", "beat")

    def __init__(
        self,
        receive: Receive,
        send: Send,
        progress: StreamProgress,
        heartbeat_s: float,
        work: asyncio.Task[Any] | None = None,
    ) -> None:
        self.receive = receive
        self.send = send
        self.progress = progress
        self.heartbeat_s = heartbeat_s
        work = work or asyncio.current_task()
        assert work is not None  # made in a request's task
        self.work = work  # which a disconnect cancels
        self.receiving: Generator[Any, None, Any] | None = None
        self.beat: asyncio.Task[None] | None = None

    async def __aenter__(self) -> None:
        self.enter()

    def enter(self) -> None:
        """What `async with` does on entering: without a coroutine (`run_chat` calls it)."""
        self.heartbeats = Heartbeats.of(self.work.get_loop(), self.heartbeat_s)
        self.heartbeats.add(self)
        self.receiving = self.receive().__await__()
        self._step()

    def _step(self, _: object = None) -> None:
        """Step the `receive()` under way to its next wait (then this is the callback that
        steps it again), or to its message: a disconnect cancels the work, anything else
        is followed by the next `receive()`. What a task would do, without the task."""
        while (receiving := self.receiving) is not None:  # None: the block was left
            try:
                waiting_on = receiving.send(None)
            except StopIteration as done:
                if done.value["type"] == "http.disconnect":
                    self.receiving = None
                    self.progress.client_gone = True
                    self.work.cancel()
                    return
                self.receiving = self.receive().__await__()
                continue
            except Exception:  # noqa: BLE001 - nobody waits for the watcher to report it
                self.receiving = None
                log.exception("the client watcher failed")
                return
            if waiting_on is None:  # a bare `yield` (`asyncio.sleep(0)`): again at the loop's next turn
                asyncio.get_running_loop().call_soon(self._step)
            elif getattr(waiting_on, "_asyncio_future_blocking", None) is not None:
                waiting_on._asyncio_future_blocking = False
                waiting_on.add_done_callback(self._step)
            else:
                self.stop_receiving()
                log.error("the client watcher stopped: receive() awaited %r, not an asyncio future", waiting_on)
            return

    def stop_receiving(self) -> None:
        receiving, self.receiving = self.receiving, None
        if receiving is not None:
            try:
                receiving.close()
            except Exception:  # noqa: BLE001
                log.exception("the client watcher failed")

    def keep_alive_due(self, now: float) -> float:
        """`Heartbeats`' check: a keep-alive when the stream has been silent for
        `heartbeat_s` (none while a previous one is still being sent); the next moment one
        may be due."""
        progress = self.progress
        if not progress.streaming:  # no response begun yet, or it has ended: nothing to keep alive
            return now + self.heartbeat_s
        due = progress.last_sent_at + self.heartbeat_s
        if due <= now and (self.beat is None or self.beat.done()):
            progress.last_sent_at = now
            self.beat = asyncio.get_running_loop().create_task(keep_alive(self.send))
            return now + self.heartbeat_s
        return due

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        return self.exit(exc_type)

    def exit(self, exc_type: type[BaseException] | None) -> bool:
        """What `async with` does on leaving (`run_chat` calls it): stop watching; `True`
        (the exception is handled) for the cancellation the client's leaving caused."""
        self.heartbeats.discard(self)
        self.stop_receiving()
        if self.beat is not None:
            self.beat.cancel()  # waiting for a slow client to read: nothing of it was written yet
        if self.progress.client_gone and exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            self.work.uncancel()
            return True
        return False


class Heartbeats:
    """The keep-alives of every open stream (`ClientWatch`) of one event loop and one
    `heartbeat_s`, under one timer instead of one each. The timer fires when the earliest
    stream may be due, asks each stream (`keep_alive_due`) and waits again: at least
    `heartbeat_s / 16`, so a keep-alive is at most that late, and N open streams cost at
    most 16 checks of each per `heartbeat_s`. Gone once no stream is left."""

    __slots__ = ("loop", "heartbeat_s", "watches", "timer")

    #: Per event loop and interval: one loop per server, several servers in the tests.
    running: ClassVar[dict[tuple[asyncio.AbstractEventLoop, float], Heartbeats]] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop, heartbeat_s: float) -> None:
        self.loop = loop
        self.heartbeat_s = heartbeat_s
        self.watches: set[ClientWatch] = set()
        self.timer: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop, heartbeat_s: float) -> Heartbeats:
        heartbeats = cls.running.get((loop, heartbeat_s))
        if heartbeats is None:
            heartbeats = cls.running[loop, heartbeat_s] = cls(loop, heartbeat_s)
        return heartbeats

    def add(self, watch: ClientWatch) -> None:
        """A stream to keep alive. Its first keep-alive is due `heartbeat_s` after its last
        frame, never before the timer armed earlier fires (a frame only moves it later)."""
        self.watches.add(watch)
        if self.timer is None:
            self.timer = self.loop.call_at(watch.progress.last_sent_at + self.heartbeat_s, self._tick)

    def discard(self, watch: ClientWatch) -> None:
        self.watches.discard(watch)
        if not self.watches:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            if self.running.get((self.loop, self.heartbeat_s)) is self:
                del self.running[self.loop, self.heartbeat_s]

    def _tick(self) -> None:
        now = time.monotonic()
        next_due = now + self.heartbeat_s
        for watch in self.watches:
            due = watch.keep_alive_due(now)
            if due < next_due:
                next_due = due
        self.timer = self.loop.call_at(max(next_due, now + self.heartbeat_s / 16), self._tick)


async def keep_alive(send: Send) -> None:
    """One `: keep-alive` comment (a failure is logged: nobody waits for this task)."""
    try:
        await send({"type": "http.response.body", "body": sse.KEEP_ALIVE, "more_body": True})
    except Exception:  # noqa: BLE001
        log.exception("sending a keep-alive failed")


#: Most frames joined into one `send` (frames wait only while the next chunk is ready).
MAX_FRAMES_PER_SEND = 64


async def stream_chunks(
    stream: ChunkStream, frames: Frames, send: Send, progress: StreamProgress, head: Message | None = None
) -> None:
    """Send every chunk as a frame, then `[DONE]`; a failure ends with the error frames.
    With `head` (an `http.response.start` message), it goes out first and the response is
    noted as begun (`progress.status`, `progress.streaming`).

    Empty non-final chunks are dropped; the one chunk with a `finish_reason` is the final
    frame and carries the last usage the upstream reported. Frames of chunks that were
    already read (one upstream read often holds many) go out together in one `send`; a
    frame never waits for the upstream: `chunks.__anext__()` is stepped by hand once, and
    completing without suspending means the chunk came from bytes already read, so its
    frame may join the pending ones; suspending means the upstream must be waited for, so
    the pending frames go out first, then the rest of the step is awaited (`Resumed`).
    Cancelled by the server (not by the client leaving), the stream still ends in words:
    `shutting_down`.

    What an idle stream keeps is this one frame and a `Resumed`: no closure, and neither
    the last chunk nor its frame (docs/BENCHMARKS.md, memory per open stream).
    """
    if head is not None:
        await send(head)
        progress.status = head["status"]
        progress.last_sent_at = time.monotonic()
        progress.streaming = True
    cut = False
    final_sent = False
    usage: Usage | None = None
    tail = frames.done()
    pending: list[bytes] = []
    chunks = aiter(stream)
    try:
        while True:
            step = chunks.__anext__().__await__()
            try:
                chunk, waiting = first_step(step)
            except StopAsyncIteration:
                break
            if waiting:  # the upstream must be waited for (on `chunk`): the pending frames go out first
                data = b""  # not kept while waiting (`chunk` holds what the step waits on)
                if pending:
                    try:
                        await send_pending(send, pending, progress)
                    except BaseException as error:
                        step.throw(error)  # the adapter sees a failure (a cancellation) too
                        raise
                chunk = await Resumed(step, chunk)
            if type(chunk) is StreamChunk:
                if chunk.usage is not None:
                    usage = chunk.usage
                if chunk.finish_reason is None:
                    if not chunk.content:
                        continue
                    data = frames.content(chunk)
                    if progress.first_token_at is None:
                        progress.first_token_at = time.monotonic()
                elif final_sent:
                    continue
                else:
                    if chunk.usage is None and usage is not None:
                        chunk.usage = usage
                    data = frames.final(chunk)
                    final_sent = True
                    progress.finish_reason = chunk.finish_reason
            elif type(chunk) is RawEvent:
                data = frames.raw(chunk)
                if chunk.token and progress.first_token_at is None:
                    progress.first_token_at = time.monotonic()
            elif type(chunk) is ToolCallChunk:
                if final_sent:
                    continue
                data = frames.tool_call(chunk)
                if progress.first_token_at is None:
                    progress.first_token_at = time.monotonic()
            elif final_sent:
                continue
            elif type(chunk) is SignatureChunk:
                data = frames.signature(chunk)
                if not data:
                    continue
            else:  # a reasoning piece
                data = frames.reasoning(chunk)
                if progress.first_token_at is None:
                    progress.first_token_at = time.monotonic()
            pending.append(data)
            if len(pending) >= MAX_FRAMES_PER_SEND:
                await send_pending(send, pending, progress)
        if not final_sent:
            raise UpstreamError("the upstream ended the stream without a finish reason")
    except GatewayError as error:
        progress.error_type = error.type
        tail = frames.failure(error, final_sent, usage)
    except Exception:  # noqa: BLE001 - a bug or an SDK surprise must still end the stream cleanly
        log.exception("stream failed")
        progress.error_type = UpstreamError.type
        tail = frames.failure(UpstreamError("the gateway failed while streaming"), final_sent, usage)
    except asyncio.CancelledError:
        if progress.client_gone:
            raise
        cut = True
        stop_error = progress.stop_error or shutting_down()
        progress.error_type = stop_error.type
        tail = frames.failure(stop_error, final_sent, usage)
    progress.streaming = False  # no keep-alive may follow the end of the response
    progress.frames_sent += len(pending)
    progress.usage = usage
    await send({"type": "http.response.body", "body": b"".join(pending) + tail, "more_body": False})
    if cut:
        asyncio.current_task().uncancel()  # type: ignore[union-attr]  # answered: the request ends normally


async def send_pending(send: Send, pending: list[bytes], progress: StreamProgress) -> None:
    """The pending frames in one `send` (the list emptied), counted in `progress`."""
    body = b"".join(pending)
    progress.frames_sent += len(pending)
    pending.clear()
    await send({"type": "http.response.body", "body": body, "more_body": True})
    progress.last_sent_at = time.monotonic()


def first_step(step: Generator[Any, None, Any]) -> tuple[Any, bool]:
    """Step `step` (an awaitable's `__await__()`) once: its value and `False` when it
    completed, or what it suspended on and `True`. The `StopIteration` of a step that
    completed is caught here, not in the caller's frame: an exception handled in a frame
    makes Python keep a frame object for it (`stream_chunks`' would stay for as long as the
    stream)."""
    try:
        return step.send(None), True
    except StopIteration as ready:
        return ready.value, False


class Resumed:
    """Awaits the rest of `step` (an awaitable's `__await__()`), which was started by hand
    and suspended on `suspended_on`, as `yield from step` would await it had it not been
    started by hand (PEP 380): `suspended_on` is handed on first, then every value, error
    and close goes to the step. An object of two slots rather than a generator (whose frame
    an idle stream would keep, ~0.2 KiB more)."""

    __slots__ = ("step", "suspended_on")

    def __init__(self, step: Generator[Any, Any, Any], suspended_on: Any) -> None:
        self.step = step
        self.suspended_on = suspended_on

    def __await__(self) -> Resumed:
        return self

    def __iter__(self) -> Resumed:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        suspended_on = self.suspended_on
        if suspended_on is not _HANDED_ON:
            self.suspended_on = _HANDED_ON
            return suspended_on
        return self.step.send(value)

    def throw(self, error: Any, value: Any = None, traceback: Any = None) -> Any:
        self.suspended_on = _HANDED_ON
        return self.step.throw(error if value is None else value)

    def close(self) -> None:
        self.step.close()


#: `Resumed.suspended_on` once it was handed on.
_HANDED_ON: Any = object()


async def send_json(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": (headers or JSON_HEADERS)})
    await send({"type": "http.response.body", "body": body})


def error_headers(error: GatewayError) -> list[tuple[bytes, bytes]]:
    """JSON, the upstream's `Retry-After` when it sent one, and on a 401 the
    `WWW-Authenticate: Bearer` every 401 must carry (RFC 9110)."""
    headers = list(JSON_HEADERS)
    if error.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if error.retry_after:
        headers.append((b"retry-after", error.retry_after.encode()))
    if error.headers:
        headers += error.headers
    return headers


async def send_error(send: Send, error: GatewayError) -> None:
    await send_json(send, error.status, json_encoder.encode(error.body()), error_headers(error))


ErrorSender = Callable[[Send, GatewayError], Awaitable[None]]
AnswerSender = Callable[[Send, "CollectedAnswer"], Awaitable[None]]
StreamOpener = Callable[[], Awaitable[ChunkStream]]


class RoutedOpen:
    """A `Call.open` that asks a route's targets (`routing.RouteOpener`): once it has run,
    what served (or failed last): `provider`, `model`, and how many targets were asked."""

    __slots__ = ("route", "provider", "model", "attempts")

    def __init__(self, route: str) -> None:
        self.route = route
        self.provider: str | None = None
        self.model: str | None = None
        self.attempts = 0

    async def __call__(self) -> ChunkStream:
        raise NotImplementedError


class Call:
    """One decoded chat request, ready to run: what a dialect's `prepare` makes of a body.

    `open` opens the upstream (an adapter's `stream_chat`, a passthrough, or a route's
    targets: `RoutedOpen`); `frames` encode what it yields; `send_answer` writes the whole
    answer when the request is not streamed. `provider` and `model` name what serves it,
    for metrics, the request log and the `X-Streamgate-*` headers; on a route, `route` and
    `attempts` (targets asked) too, set once the route's targets were asked (`serve`).
    `requested_model` is the model as the client named it (a route's name, `<provider>/<model>`
    or a bare name), when the dialect has one name for it; `lease` the caller's
    (`callers.Lease`), ended with the request."""

    __slots__ = (
        "provider",
        "model",
        "open",
        "frames",
        "streaming",
        "resumable",
        "send_answer",
        "route",
        "attempts",
        "requested_model",
        "lease",
    )

    def __init__(
        self,
        *,
        provider: str,
        model: str,
        open: StreamOpener,
        frames: Frames,
        streaming: bool,
        send_answer: AnswerSender,
        resumable: bool = False,
        requested_model: str | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.open = open
        self.frames = frames
        self.streaming = streaming
        self.resumable = resumable and streaming
        self.send_answer = send_answer
        self.route: str | None = None
        self.attempts = 1
        self.requested_model = requested_model
        self.lease: Lease | None = None

    def serve(self, routed: RoutedOpen) -> None:
        """Note what a route's opener asked and what served (or failed last)."""
        self.route = routed.route
        self.attempts = routed.attempts
        provider, model = routed.provider, routed.model
        if provider is None or model is None:
            return
        if provider != self.provider:
            metrics.moved(self.provider, provider)
        self.provider, self.model = provider, model
        serve = getattr(self.frames, "serve", None)
        if serve is not None:
            serve(provider, model)

    def served_headers(self) -> list[tuple[bytes, bytes]]:
        """`X-Streamgate-Provider`, `-Model`, `-Attempts`: what served this answer (made
        once per provider, model and attempts while `_SERVED_HEADERS` has room)."""
        key = (self.provider, self.model, self.attempts)
        headers = _SERVED_HEADERS.get(key)
        if headers is None:
            headers = [
                (b"x-streamgate-provider", header_value(self.provider)),
                (b"x-streamgate-model", header_value(self.model)),
                (b"x-streamgate-attempts", b"%d" % self.attempts),
            ]
            if len(_SERVED_HEADERS) < MAX_SERVED_HEADERS:  # model names come from requests: bounded
                _SERVED_HEADERS[key] = headers
        return headers


#: `Call.served_headers` made already, by provider, model and attempts; never changed once made.
_SERVED_HEADERS: dict[tuple[str, str, int], list[tuple[bytes, bytes]]] = {}
MAX_SERVED_HEADERS = 1024


def header_value(text: str) -> bytes:
    """`text` as a header value: printable ASCII as it is, anything else percent-encoded
    (a model name comes from the request)."""
    if text.isascii() and text.isprintable():
        return text.encode()
    return urllib.parse.quote(text, safe="/:@-._~").encode()


class Dialect(Protocol):
    """One client dialect: its request shape decoded into a `Call`, its errors' shape."""

    def prepare(self, body: bytes, scope: Scope) -> Call:
        """The request's `Call`; raises a `GatewayError` naming the field at fault."""
        ...

    async def send_error(self, send: Send, error: GatewayError) -> None: ...

    def error_status(self, error: GatewayError) -> int:
        """The HTTP status this dialect answers `error` with."""
        ...


class Sink(Protocol):
    """Where an opened stream's frames go: the client (`stream_to_client`) or a resumable
    stream's log with the client following (`resume.Streams`). A sink owns the stream
    from the call on and always closes it."""

    def __call__(
        self,
        call: Call,
        stream: ChunkStream,
        send: Send,
        progress: StreamProgress,
        handed_over: Callable[[], None],
        scope: Scope | None = None,
    ) -> Awaitable[None]: ...


class ResumableSink(Sink, Protocol):
    """The resumable sink, which may refuse a new stream before any upstream call."""

    def admit(self, scope: Scope) -> None:
        """Raise `RateLimitedError` when no more streams may run here without a reader."""
        ...


class ChatEndpoint:
    """A dialect's chat endpoint, as a plain ASGI app: read the body, `dialect.prepare` it,
    run it (`run_chat`); a refusal is answered in the dialect's shape and logged."""

    def __init__(self, dialect: Dialect, settings: Settings, resumable_sink: ResumableSink | None = None) -> None:
        self.dialect = dialect
        self.settings = settings
        self.resumable_sink = resumable_sink

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """`run_chat`'s coroutine, which reads and prepares the request first (`accept`):
        a plain function, so that an open stream keeps no frame of it."""
        progress = StreamProgress()
        return run_chat(
            self.accept(scope, receive, send, progress),
            receive,
            send,
            self.settings.sse_heartbeat_s,
            sink=self.sink,
            send_error=self.dialect.send_error,
            scope=scope if self.settings.access_log else None,
            progress=progress,
            request_headers=scope["headers"],
        )

    async def accept(self, scope: Scope, receive: Receive, send: Send, progress: StreamProgress) -> Call | None:
        """The request's `Call`; `None` when it was refused (answered and logged here) or
        the client left before its body was read."""
        caller: Caller | None = scope.get(CALLER)
        try:
            body = await read_body(scope, receive, self.settings.max_body_bytes)
            call = self.dialect.prepare(body, scope)
            if call.resumable and self.resumable_sink is not None:
                self.resumable_sink.admit(scope)
            if caller is not None:  # the model is known now: may this caller use it, and now?
                route = call.open.route if isinstance(call.open, RoutedOpen) else None
                caller.check_model(call.requested_model, call.provider, call.model, route)
                call.lease = await caller.admit(call.streaming)
        except ClientGone:
            return None
        except GatewayError as error:
            metrics.record_rejected(error.type, error.provider)
            if caller is not None:
                caller.refused(error.type)
            await self.dialect.send_error(status_noted(send, progress), error)
            if self.settings.access_log:
                log_request(scope, self.dialect.error_status(error), error.provider, None, error_type=error.type)
            return None
        if timing.tracer is not None:
            progress.trace = timing.tracer.request(call, scope, progress.started_at, body)
        return call

    def sink(
        self,
        call: Call,
        stream: ChunkStream,
        send: Send,
        progress: StreamProgress,
        handed_over: Callable[[], None],
        scope: Scope | None = None,
    ) -> Awaitable[None]:
        """The resumable sink for a resumable call, else the client (`stream_to_client`)."""
        sink = self.resumable_sink if call.resumable and self.resumable_sink is not None else stream_to_client
        return sink(call, stream, send, progress, handed_over, scope)


def stream_to_client(
    call: Call,
    stream: ChunkStream,
    send: Send,
    progress: StreamProgress,
    handed_over: Callable[[], None],
    scope: Scope | None = None,
) -> Awaitable[None]:
    """The plain sink: the `200` and the frames straight to the client. A plain function
    returning `stream_chunks`' coroutine (which sends the head): one frame fewer per open
    stream."""
    return stream_chunks(stream, call.frames, send, progress, SSE_HEAD)


async def run_chat(
    call: Call | Awaitable[Call | None],
    receive: Receive,
    send: Send,
    heartbeat_s: float,
    *,
    sink: Sink = stream_to_client,
    send_error: ErrorSender,
    scope: Scope | None = None,
    progress: StreamProgress | None = None,
    request_headers: Any = None,
) -> None:
    """Open the upstream and answer: into `sink` as a stream, or (not streaming) as one
    JSON object. Shared by every dialect; the client leaving cancels it at once and the
    upstream connection is released. The server shutting down cancels it too, and then it
    still answers (`requests_ended_at_exit`). With `scope`, the request is logged at its
    end (`log_request`). A sink may take the stream over (a resumable stream's generation
    outlives its client): it then calls `done()`, and the metrics and the log line are the
    sink's to write when the stream ends. `progress` may be made earlier (when the request
    arrived), else here. `request_headers`: the scope's `headers`, let go once the head of
    the answer went out (`status_noted`). `call` may be an awaitable of it (`ChatEndpoint`'s
    reading and preparing of the request, awaited in this frame rather than in one of its
    own that would stay for as long as the stream); `None` from it: the request was
    answered already (a refusal) or the client left."""
    if not isinstance(call, Call):
        accepted = await call
        if accepted is None:
            return
        call = accepted
    progress = progress or StreamProgress()
    stream: ChunkStream | None = None
    metrics.stream_started(call.provider)
    task = asyncio.current_task()
    assert task is not None  # a request runs in a task of its own
    open_requests = _open_requests.get(task.get_loop())  # (`get_running_loop` asks the OS for the pid on 3.11)
    if open_requests is not None:
        open_requests.add(task)
    noted_send = NotedSend(send, progress, call, request_headers)
    watch = ClientWatch(receive, send, progress, heartbeat_s, task)
    try:
        watch.enter()  # `async with watch:` without the two coroutines of its `__aenter__` and `__aexit__`
        try:
            try:
                stream = await open_stream(call, progress)
                if progress.trace is not None:  # the content capture reads the stream when it is on
                    stream = progress.trace.opened(stream)
                if call.streaming:
                    await sink(call, stream, noted_send, progress, progress.hand_over, scope)
                else:
                    answer = await collect(stream)
                    progress.upstream_done_at = time.monotonic()
                    progress.usage = answer.final.usage
                    progress.finish_reason = answer.final.finish_reason
                    await call.send_answer(noted_send, answer)
            except GatewayError as error:
                progress.error_type = error.type
                await send_error(noted_send, error)
            except asyncio.CancelledError:
                if progress.client_gone or progress.status is not None:
                    raise
                progress.error_type = ShuttingDownError.type
                await send_error(noted_send, shutting_down())
                task.uncancel()  # answered: the request ends normally
        except BaseException as failure:
            if not watch.exit(type(failure)):
                raise
        else:
            watch.exit(None)
    finally:
        if open_requests is not None:
            open_requests.discard(task)
        if not progress.handed_over:
            await end_request(call, stream, progress, scope)


async def end_request(call: Call, stream: ChunkStream | None, progress: StreamProgress, scope: Scope | None) -> None:
    """What every request does at its end, wherever it ran: close the upstream, count it,
    log it (a cut request's line is a warning)."""
    if stream is not None:
        await close_shielded(stream)
    metrics.record_stream(call.provider, progress, upstream_opened=stream is not None)
    if progress.trace is not None:
        progress.trace.end(call, progress)
    if call.lease is not None:
        usage = progress.usage
        call.lease.end(usage.prompt_tokens + usage.completion_tokens if usage is not None else 0, progress.error_type)
    if scope is not None:
        log_request(
            scope, progress.status, call.provider, call.model, progress, route=call.route, attempts=call.attempts
        )
    elif progress.error_type == ShuttingDownError.type:
        log.warning("shutting down: cut a request to %s after %d frames", call.provider, progress.frames_sent)


async def close_shielded(stream: ChunkStream) -> None:
    """`stream.aclose()`, which a cancellation cannot interrupt. Closing mostly completes
    without waiting (the body was read to its end, or dropping the connection is
    synchronous): then nothing could have interrupted it, and no cancel scope is paid
    for; only a close that waits finishes under a shield."""
    step = stream.aclose().__await__()
    try:
        suspended_on = step.send(None)
    except StopIteration:
        return
    with anyio.CancelScope(shield=True):
        await Resumed(step, suspended_on)


def status_noted(send: Send, progress: StreamProgress, call: Call | None = None, request_headers: Any = None) -> Send:
    """`send`, noting the status of the response it starts in `progress` (for the request
    log: each dialect chooses its own error statuses), adding its `Server-Timing` header,
    and with a `call`, what served it (`Call.served_headers`): on every answer, whichever
    sink or error sender starts it. `request_headers` (the scope's `headers`), when the
    server made it a list, is emptied once the head went out (CORS reads the `Origin` for
    it; nothing reads the request's headers later): the server (uvicorn) would keep them
    as long as the answer streams."""
    return NotedSend(send, progress, call, request_headers)


class NotedSend:
    """`status_noted`'s `send`: an object of four slots rather than a closure (a function
    and a cell per variable), kept by every open stream."""

    __slots__ = ("send", "progress", "call", "request_headers")

    def __init__(self, send: Send, progress: StreamProgress, call: Call | None, request_headers: Any) -> None:
        self.send = send
        self.progress = progress
        self.call = call
        self.request_headers = request_headers

    def __call__(self, message: Any) -> Awaitable[None]:
        """The server's own `send` of a body (no coroutine of ours per frame sent), or the
        head with what is noted of it (`start`)."""
        if message["type"] == "http.response.start":
            return self.start(message)
        return self.send(message)

    async def start(self, message: Any) -> None:
        progress = self.progress
        progress.status = message["status"]
        progress.head_sent_at = now = time.monotonic()
        timing_header = (b"server-timing", progress.server_timing(now))
        if self.call is not None:
            headers = [*message["headers"], timing_header, *self.call.served_headers()]
        else:
            headers = [*message["headers"], timing_header]
        await self.send({**message, "headers": headers})
        if type(self.request_headers) is list:
            self.request_headers.clear()
        self.request_headers = None


async def open_stream(call: Call, progress: timing.RequestTiming) -> ChunkStream:
    """`call.open()`, with any exception outside the contract (a bug, an SDK surprise)
    answered as a 502 `upstream_error` rather than a bare 500. A call opens once: the opener
    is let go, and with it what it holds (the decoded request, a passthrough's body), which
    an open stream would otherwise keep for as long as it streams. `progress` is in
    `REQUEST_TIMING` while it opens (the upstream transport notes its timestamps there), and
    only then: the token and the context it sets are not kept by an open stream."""
    opener = call.open
    timing_token = timing.REQUEST_TIMING.set(progress)
    try:
        return await opener()
    except GatewayError:
        raise
    except Exception:  # noqa: BLE001
        log.exception("opening the %s upstream failed", call.provider)
        raise UpstreamError("the gateway failed while opening the upstream", provider=call.provider) from None
    finally:
        timing.REQUEST_TIMING.reset(timing_token)
        call.open = opened_already
        if isinstance(opener, RoutedOpen):
            call.serve(opener)


async def opened_already() -> ChunkStream:
    """`Call.open` once the call was opened (`open_stream`)."""
    raise RuntimeError("a call opens its upstream once")


class CollectedAnswer:
    """A whole answer read from a stream: its text, reasoning, tool calls and final chunk."""

    __slots__ = ("content", "reasoning", "tool_calls", "final", "signature", "raw")

    def __init__(
        self,
        content: str,
        reasoning: str | None,
        tool_calls: list[ToolCall] | None,
        final: StreamChunk,
        signature: str | None = None,
        raw: bytes = b"",
    ) -> None:
        self.content = content
        self.reasoning = reasoning
        self.tool_calls = tool_calls
        self.final = final
        self.signature = signature  # the reasoning's signature, when the provider sent one
        self.raw = raw  # a passthrough's answer as the upstream sent it


async def collect(stream: ChunkStream) -> CollectedAnswer:
    """The whole answer of a stream, its final chunk carrying the last usage. Tool-call
    pieces are joined per call `index` (id and name from the first, arguments in order)."""
    parts: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, tuple[str, str, list[str]]] = {}
    usage: Usage | None = None
    signature: str | None = None
    raw: list[bytes] = []
    try:
        async for chunk in stream:
            if isinstance(chunk, ReasoningChunk):
                reasoning.append(chunk.reasoning)
                continue
            if isinstance(chunk, SignatureChunk):
                signature = chunk.signature
                continue
            if isinstance(chunk, RawEvent):
                raw.append(chunk.data)
                continue
            if isinstance(chunk, ToolCallChunk):
                call = calls.setdefault(chunk.index, (chunk.id or "", chunk.name or "", []))
                if chunk.arguments:
                    call[2].append(chunk.arguments)
                continue
            assert isinstance(chunk, StreamChunk)
            parts.append(chunk.content)
            usage = chunk.usage or usage
            if chunk.finish_reason is not None:
                chunk.usage = usage
                final = chunk
                break
        else:
            raise UpstreamError("the upstream ended the stream without a finish reason")
        await drain(stream, final)
    except GatewayError:
        raise
    except Exception:  # noqa: BLE001
        log.exception("upstream failed")
        raise UpstreamError("the gateway failed while reading the upstream") from None
    tool_calls = [
        ToolCall(call_id, FunctionCall(name, "".join(arguments)))
        for _, (call_id, name, arguments) in sorted(calls.items())
    ] or None
    return CollectedAnswer(
        "".join(parts), "".join(reasoning) if reasoning else None, tool_calls, final, signature, b"".join(raw)
    )


async def drain(stream: ChunkStream, final: StreamChunk) -> None:
    """Read a stream past its final chunk (so its connection can be reused). A failure
    there is the answer only when the final chunk says the answer failed; otherwise the
    final chunk already tells how it ended — a safety block is a `200` with
    `finish_reason: "content_filter"`, as OpenAI answers it."""
    try:
        async for _ in stream:
            pass
    except GatewayError:
        if final.finish_reason is FinishReason.ERROR:
            raise


# --- shutdown ---------------------------------------------------------------------------

#: The chat requests being answered, per event loop whose app will end them at its exit
#: (`requests_ended_at_exit`): one loop per server, several servers in the tests.
_open_requests: dict[asyncio.AbstractEventLoop, set[asyncio.Task[Any]]] = {}

#: How long the exit waits for the requests it cut to send their last bytes.
CUT_WAIT_S = 2.0


def shutting_down() -> ShuttingDownError:
    return ShuttingDownError("the server is shutting down; the answer was cut off before its end")


@asynccontextmanager
async def requests_ended_at_exit() -> AsyncIterator[None]:
    """Around an app's life (its lifespan). On leaving, every chat request still open is
    cancelled — unless the server cancelled it already, as uvicorn does when
    `timeout_graceful_shutdown` runs out — and waited for while it ends in words: a stream
    with the failure end of type `shutting_down`, a request not yet answered with a 503."""
    loop = asyncio.get_running_loop()
    open_requests = _open_requests[loop] = set()
    try:
        yield
    finally:
        del _open_requests[loop]
        pending = [task for task in open_requests if not task.done()]
        for task in pending:
            if not task.cancelling():
                task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=CUT_WAIT_S)


# --- the request log --------------------------------------------------------------------

#: The scope key under which a dialect leaves fields of its own for the request's log line
#: (`session=<id>` on `/v1/messages`), set while it prepares the request.
LOG_FIELDS = "streamgate.log_fields"


#: The longest field of a request-log line (a path, a model name from a request), in
#: characters; a longer one is cut and ends with `...`.
MAX_LOG_FIELD = 200


def lighter_log_records() -> None:
    """Log records without the thread, process and multiprocessing names and the caller's
    file and line, which no format of ours shows: gathering them is most of making each
    request's record (logging's own "Optimization" advice)."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def log_field(value: str) -> str:
    """`value` safe for a one-line log: cut to `MAX_LOG_FIELD`, and when it holds a control
    character, a line separator or a space, written with escapes (`\\n`, `\\x1b`,
    `\\x20`), so no request can forge or split a line. Printable values cost one check."""
    if len(value) > MAX_LOG_FIELD:
        value = value[:MAX_LOG_FIELD] + "..."
    if value.isprintable() and " " not in value:
        return value
    return value.encode("unicode_escape").decode("ascii").replace(" ", "\\x20")


def log_request(
    scope: Scope,
    status: int | None,
    provider: str | None,
    model: str | None,
    progress: StreamProgress | None = None,
    error_type: str | None = None,
    *,
    route: str | None = None,
    attempts: int = 1,
) -> None:
    """One line for one chat request, at its end: method, path, status, `provider=`,
    `model=` (what served), on a route `route=` and `attempts=` (targets asked), `ttft=`
    and `duration=` in seconds, `tokens=<prompt>+<completion>` (`-` for what is not
    known), `cached=` the prompt tokens read from the provider's cache (when any),
    `stream=` a resumable stream's id, `error=` the contract's error type or
    `client_gone`, then the dialect's own fields (`LOG_FIELDS`). Fields a client chooses
    are escaped and cut (`log_field`). A request cut by the shutdown is a warning."""
    line = (
        f"{log_field(scope['method'])} {log_field(scope['path'])} {status or '-'}"
        f" provider={log_field(provider or '-')} model={log_field(model or '-')}"
    )
    if route is not None:
        line += f" route={log_field(route)} attempts={attempts}"
    if progress is not None:
        started_at = progress.started_at
        first = progress.first_token_at
        usage = progress.usage
        ttft = f"{first - started_at:.3f}s" if first is not None else "-"
        tokens = f"{usage.prompt_tokens}+{usage.completion_tokens}" if usage is not None else "-"
        line += f" ttft={ttft} duration={time.monotonic() - started_at:.3f}s tokens={tokens}"
        if usage is not None and usage.cached_tokens:
            line += f" cached={usage.cached_tokens}"
        # A resumable stream's generation goes on without its client: no error in that.
        gone = progress.client_gone and progress.stream_id is None
        error_type = progress.error_type or ("client_gone" if gone else None)
        if progress.stream_id is not None:
            line += f" stream={progress.stream_id}"
    if error_type is not None:
        line += f" error={log_field(error_type)}"
    caller: Caller | None = scope.get(CALLER)
    if caller is not None:
        line += f" caller={caller.name}"
    extra = scope.get(LOG_FIELDS)
    if extra is not None:
        line += " " + extra
    level = logging.WARNING if error_type == ShuttingDownError.type else logging.INFO
    access_log.log(level, line)
