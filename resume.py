"""Resumable streams (`"resumable": true`): the sink whose producer outlives its first
client, and the endpoints that resume (`GET`) and stop (`DELETE`) a stream by its id.

`pipeline.run_chat` opens the upstream as for any stream and hands it to the `Streams`
sink: the `200` carries `X-Stream-Id`, and a producer task (`Generation`) runs
the ordinary pump (`pipeline.stream_chunks`) with a `send` that appends each batch of
frames to the stream's log (`stream_store`) and then passes it to the first client while
that client is there. When the client leaves, the producer goes on to the end.

A reader after `Last-Event-ID: N` gets the log's bytes from the end of frame N on:
exactly what the first connection carried after N. The dialect's `Frames` of a resumable
stream count their frames (`last_id`), note the final frame (`final_sent`) and describe
themselves (`meta`), so a reader can write the error end in the stream's own dialect when
the producer is lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from starlette.types import Receive, Scope, Send

from . import sse
from .adapter import ChunkStream
from .chat_types import RawEvent, ReasoningChunk, SignatureChunk, StreamChunk, ToolCallChunk, Usage
from .errors import (
    CancelledError,
    GatewayError,
    InvalidRequestError,
    RateLimitedError,
    ShuttingDownError,
    UpstreamError,
)
from .pipeline import (
    SSE_HEADERS,
    Call,
    ClientWatch,
    ErrorSender,
    Frames,
    StreamProgress,
    end_request,
    stream_chunks,
)
from .settings import Settings, redacted
from .stream_store import MAX_LOG_BYTES, Batch, MemoryStore, StreamLog, StreamLost, StreamReader, StreamStore, not_found

log = logging.getLogger("streamgate")

#: The scope key naming the caller a request runs for (set by the callers' guard): a
#: stream's owner in `Streams.detached_by_owner`.
OWNER_KEY = "streamgate.caller"

#: What `secrets.token_urlsafe` makes; any other id is unknown without asking the store.
STREAM_ID = re.compile(r"[A-Za-z0-9_-]{16,86}")


class ResumableFrames(Frames, Protocol):
    """A dialect's frames for a resumable stream."""

    last_id: int  # the id of the last frame made

    @property
    def model(self) -> str: ...

    @property
    def final_sent(self) -> bool:
        """The final `message` frame has been made."""
        ...

    def meta(self) -> dict[str, Any]:
        """What `restore` needs to make this stream's frames again; `dialect` names it."""
        ...


class PlainFrames(Frames, Protocol):
    """A dialect's frames that `NumberedFrames` can number (they carry no `id:` lines)."""

    @property
    def model(self) -> str: ...

    @property
    def final_sent(self) -> bool: ...


F = TypeVar("F", bound=PlainFrames)


class NumberedFrames(Generic[F]):
    """A dialect's frames (`frames`) for a resumable stream: the same frames, each also
    carrying an `id:` line (1, 2, 3, …, as on the native stream) so that a resume can name
    where it left off. A dialect's subclass adds how to describe and rebuild them (`meta`,
    a `restore` for `RESTORERS`)."""

    __slots__ = ("frames", "last_id")

    def __init__(self, frames: F) -> None:
        self.frames = frames
        self.last_id = 0

    @property
    def model(self) -> str:
        return self.frames.model

    @property
    def final_sent(self) -> bool:
        return self.frames.final_sent

    def content(self, chunk: StreamChunk) -> bytes:
        return self.numbered(self.frames.content(chunk))

    def reasoning(self, chunk: ReasoningChunk) -> bytes:
        return self.numbered(self.frames.reasoning(chunk))

    def tool_call(self, chunk: ToolCallChunk) -> bytes:
        return self.numbered(self.frames.tool_call(chunk))

    def signature(self, chunk: SignatureChunk) -> bytes:
        return self.numbered(self.frames.signature(chunk))

    def raw(self, chunk: RawEvent) -> bytes:
        return self.numbered(self.frames.raw(chunk))

    def final(self, chunk: StreamChunk) -> bytes:
        return self.numbered(self.frames.final(chunk))

    def failure(self, error: GatewayError, final_sent: bool, usage: Usage | None) -> bytes:
        return self.numbered(self.frames.failure(error, final_sent, usage))

    def done(self) -> bytes:
        return self.frames.done()

    def numbered(self, frames: bytes) -> bytes:
        data, self.last_id = sse.numbered(frames, self.last_id)
        return data


#: Per dialect name: frames like the producer's, rebuilt from `meta()` (for an error end).
Restorers = Mapping[str, Callable[[dict[str, Any]], ResumableFrames]]


def store_for(settings: Settings) -> StreamStore:
    if settings.redis_url:
        from .stream_store import RedisStore, require_redis

        require_redis(settings.redis_url)
        return RedisStore(settings.redis_url, settings.resume_ttl_s, settings.sse_heartbeat_s)
    return MemoryStore(settings.resume_ttl_s)


class Generation:
    """The producer of one resumable stream: its task runs the pump into the log (and to
    the first client while attached). `stop(error)` ends it with `error`'s frames."""

    def __init__(
        self,
        streams: Streams,
        call: Call,
        stream: ChunkStream,
        frames: ResumableFrames,
        progress: StreamProgress,
        client_send: Send,
        request_scope: Scope | None = None,
    ) -> None:
        self.streams = streams
        self.request_scope = request_scope  # set: the request is logged when the generation ends
        self.call = call
        self.stream = stream
        self.frames = frames
        self.progress = progress
        self.client_send: Send | None = client_send
        self.stream_log: StreamLog | None = None
        self.task: asyncio.Task[None] | None = None
        self.stop_error: GatewayError | None = None
        self.size = 0
        self.ended = False
        #: Who reads it here: the first client, then resuming readers in this process; at 0
        #: the stream runs detached (`Streams.detached`).
        self.readers = 1
        self.finished = False  # its end is stored; readers no longer count
        #: The caller it runs for (`OWNER_KEY` in the request's scope), for per-caller counts.
        self.owner: str | None = request_scope.get(OWNER_KEY) if request_scope is not None else None

    def start(self, stream_log: StreamLog) -> asyncio.Task[None]:
        self.stream_log = stream_log
        self.task = asyncio.get_running_loop().create_task(self.run())
        return self.task

    def stop(self, error: GatewayError) -> None:
        if self.stop_error is None and not self.ended:
            self.stop_error = self.progress.stop_error = error
            if self.task is not None:
                self.task.cancel()

    def cancel(self) -> None:
        """A `DELETE` named this stream."""
        self.stop(CancelledError("the stream was stopped by DELETE"))

    async def send(self, message: Any) -> None:
        """Append the batch to the log, then give it to the first client (if still there)."""
        body: bytes = message["body"]
        more: bool = message.get("more_body", False)
        frames = self.frames
        self.stream_log.append(Batch(frames.last_id, body, frames.final_sent, not more))  # type: ignore[union-attr]
        self.ended = not more
        client_send = self.client_send
        if client_send is not None:
            await client_send(message)
        if more:
            self.size += len(body)
            if self.stream_log.failed is not None:  # type: ignore[union-attr]
                raise UpstreamError("the stream store (REDIS_URL) failed; the stream cannot go on resumable")
            if self.size > MAX_LOG_BYTES:
                raise UpstreamError(
                    f"the answer passed {MAX_LOG_BYTES} bytes of frames, the most a resumable stream keeps"
                )

    async def run(self) -> None:
        try:
            if self.stop_error is not None:  # stopped before it began
                raise asyncio.CancelledError
            await stream_chunks(self.stream, self.frames, self.send, self.progress)
        except asyncio.CancelledError:
            error = self.stop_error or ShuttingDownError("the server is shutting down")
            self.progress.error_type = error.type
            if not self.ended:
                tail = self.frames.failure(error, self.frames.final_sent, None)
                await self.send({"type": "http.response.body", "body": tail, "more_body": False})
        finally:
            self.progress.streaming = False
            await asyncio.shield(self.finish())

    async def finish(self) -> None:
        try:
            await self.stream_log.close()  # type: ignore[union-attr]
        finally:
            self.streams.ended(self)
            await end_request(self.call, self.stream, self.progress, self.request_scope)


class Streams:
    """The resumable streams of one app: the store, the producers running here."""

    def __init__(self, settings: Settings, store: StreamStore, restorers: Restorers) -> None:
        self.heartbeat_s = settings.sse_heartbeat_s
        self.grace_s = settings.shutdown_grace_s
        self.store = store
        self.restorers = restorers
        self.producers: set[Generation] = set()
        #: The producers running here, by stream id (a resume here follows its generation).
        self.running: dict[str, Generation] = {}
        self.max_detached = settings.max_detached_streams
        #: Streams running here with no reader (`MAX_DETACHED_STREAMS`), in all and per
        #: owner (a caller's `max_streams` counts its own).
        self.detached = 0
        self.detached_by_owner: dict[str, int] = {}

    def admit(self, scope: Scope) -> None:
        """Before any upstream call: `429` when `MAX_DETACHED_STREAMS` run here already."""
        if self.detached >= self.max_detached:
            raise RateLimitedError(
                f"{self.detached} resumable streams run here without a reader, the most "
                f"MAX_DETACHED_STREAMS allows; try again later",
                retry_after="1",
            )

    def attach(self, generation: Generation) -> None:
        """A reader follows `generation` (a resume in this process)."""
        if generation.finished:
            return
        generation.readers += 1
        if generation.readers == 1:
            self._count_detached(generation, -1)

    def detach(self, generation: Generation) -> None:
        """A reader of `generation` left; the last one leaving past `MAX_DETACHED_STREAMS`
        stops it (the upstream is closed), so abandoned streams never pile up."""
        if generation.finished:
            return
        generation.readers -= 1
        if generation.readers == 0:
            self._count_detached(generation, 1)
            if self.detached > self.max_detached:
                generation.stop(
                    RateLimitedError(
                        f"stopped when its reader left: more resumable streams than "
                        f"MAX_DETACHED_STREAMS ({self.max_detached}) ran without one"
                    )
                )

    def ended(self, generation: Generation) -> None:
        self.producers.discard(generation)
        self.running.pop(generation.progress.stream_id or "", None)
        generation.finished = True
        if generation.readers == 0:
            self._count_detached(generation, -1)

    def _count_detached(self, generation: Generation, step: int) -> None:
        self.detached += step
        owner = generation.owner
        if owner is not None:
            count = self.detached_by_owner.get(owner, 0) + step
            if count:
                self.detached_by_owner[owner] = count
            else:
                self.detached_by_owner.pop(owner, None)

    async def start(self) -> None:
        await self.store.start()

    async def aclose(self) -> None:
        """At shutdown: the producers get the grace to finish, then end with `shutting_down`."""
        tasks = [g.task for g in self.producers if g.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=self.grace_s)
        for generation in list(self.producers):
            generation.stop(ShuttingDownError("the server is shutting down"))
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        await self.store.aclose()

    async def __call__(
        self,
        call: Call,
        stream: ChunkStream,
        send: Send,
        progress: StreamProgress,
        handed_over: Callable[[], None],
        scope: Scope | None = None,
    ) -> None:
        """The resumable sink (`pipeline.Sink`): make the stream's log, start its producer
        with the stream, follow it while the client stays. From the producer's start, the
        stream and the request's end (metrics, the log line) are the producer's."""
        frames: ResumableFrames = call.frames  # type: ignore[assignment]  # a resumable call's frames
        # A dialect whose stream has an id of its own (a response's id) names it `stream_id`.
        stream_id = progress.stream_id = getattr(frames, "stream_id", None) or secrets.token_urlsafe(16)
        generation = Generation(self, call, stream, frames, progress, send, scope)
        stream_log = await self.create(stream_id, frames, generation)
        headers = [*SSE_HEADERS, (b"x-stream-id", stream_id.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        progress.last_sent_at = time.monotonic()
        progress.streaming = True
        handed_over()
        self.producers.add(generation)
        self.running[stream_id] = generation
        task = generation.start(stream_log)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if progress.client_gone:  # the generation goes on without its client
                generation.client_send = None
                self.detach(generation)
                raise
            if not task.done():  # the server is shutting down: the client gets the end in words
                generation.stop(ShuttingDownError("the server is shutting down"))
                await asyncio.wait([task], timeout=5)
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
        finally:
            generation.client_send = None

    async def create(self, stream_id: str, frames: ResumableFrames, generation: Generation) -> StreamLog:
        meta = json.dumps(frames.meta()).encode()
        try:
            return await self.store.create(stream_id, meta, generation.cancel)
        except Exception as error:  # noqa: BLE001 - the store down is the gateway's failure
            log.warning("the stream store failed creating a stream: %s", redacted(str(error)))
            raise UpstreamError(
                "the stream store (REDIS_URL) is unreachable; a resumable stream cannot start"
            ) from None

    async def replay(self, reader: StreamReader, after: int) -> AsyncIterator[bytes]:
        """The stream's bytes after frame `after`, live to the end; an error end if lost."""
        last_id, final_sent = 0, False
        try:
            async for batch in reader.batches():
                if batch.end and after > batch.last_id:
                    after = batch.last_id  # past the last frame: still the end
                data = bytes_after(batch, last_id, after)
                last_id, final_sent = batch.last_id, batch.final_sent
                if data:
                    yield data
        except StreamLost as lost:
            meta = json.loads(reader.meta)
            frames = self.restorers[meta["dialect"]](meta)
            frames.last_id = max(last_id, after)
            yield frames.failure(UpstreamError(str(lost)), final_sent, None)


def bytes_after(batch: Batch, previous_last_id: int, after: int) -> bytes:
    """The part of `batch` after the end of frame `after` (frames start with `id: N`; a
    frame never holds a blank line). `previous_last_id`: the last id before this batch."""
    if after <= previous_last_id:
        return batch.data
    if after > batch.last_id:
        return b""
    data = batch.data
    start = (b"\n\n" + data).find(b"\n\nid: %d\n" % after)
    return data[data.find(b"\n\n", start) + 2 :]


def last_event_id(scope: Scope) -> int:
    """`Last-Event-ID` (what an `EventSource` sends when it reconnects), else
    `?last_event_id=`, else 0."""
    value: bytes | None = None
    for name, header in scope["headers"]:
        if name == b"last-event-id":
            value = header
    if value is None:
        for pair in scope.get("query_string", b"").split(b"&"):
            name, _, query_value = pair.partition(b"=")
            if name == b"last_event_id":
                value = query_value
    if value is None or value == b"":
        return 0
    if not value.isdigit() or len(value) > 18:
        raise InvalidRequestError("Last-Event-ID: must be a frame id, a non-negative integer")
    return int(value)


class ResumeEndpoint:
    """`GET /api/v1/chat/stream/{stream_id}` (and the `/v1` twin): the stream after
    `Last-Event-ID`, live to its end."""

    def __init__(self, streams: Streams, send_error: ErrorSender) -> None:
        self.streams = streams
        self.send_error = send_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream_id: str = scope["path_params"]["stream_id"]
        try:
            after = last_event_id(scope)
            reader = await open_reader(self.streams.store, stream_id)
        except GatewayError as error:
            await self.send_error(send, error)
            return
        progress = StreamProgress()
        generation = self.streams.running.get(stream_id)
        if generation is not None:
            self.streams.attach(generation)
        try:
            async with ClientWatch(receive, send, progress, self.streams.heartbeat_s):
                headers = [*SSE_HEADERS, (b"x-stream-id", stream_id.encode())]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                progress.last_sent_at = time.monotonic()
                progress.streaming = True
                async for data in self.streams.replay(reader, after):
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                    progress.last_sent_at = time.monotonic()
                progress.streaming = False
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if generation is not None:
                self.streams.detach(generation)


class CancelEndpoint:
    """`DELETE /api/v1/chat/stream/{stream_id}` (and the `/v1` twin): stop the generation;
    `204` once its readers have the `cancelled` end (or after `2 × SSE_HEARTBEAT_S`)."""

    def __init__(self, streams: Streams, send_error: ErrorSender) -> None:
        self.streams = streams
        self.send_error = send_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream_id: str = scope["path_params"]["stream_id"]
        store = self.streams.store
        try:
            if not STREAM_ID.fullmatch(stream_id):
                raise not_found(stream_id)
            try:
                await store.cancel(stream_id)
            except GatewayError:
                raise
            except Exception as error:  # noqa: BLE001
                raise store_failed(error) from None
            reader = await open_reader(store, stream_id)
        except GatewayError as error:
            await self.send_error(send, error)
            return
        try:
            async with asyncio.timeout(2 * self.streams.heartbeat_s):
                async for _ in reader.batches():
                    pass
        except (TimeoutError, StreamLost):
            pass
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def open_reader(store: StreamStore, stream_id: str) -> StreamReader:
    if not STREAM_ID.fullmatch(stream_id):
        raise not_found(stream_id)
    try:
        return await store.open(stream_id)
    except GatewayError:
        raise
    except Exception as error:  # noqa: BLE001
        raise store_failed(error) from None


def store_failed(error: Exception) -> UpstreamError:
    log.warning("the stream store failed: %s", redacted(str(error)))
    return UpstreamError("the stream store (REDIS_URL) is unreachable")
