"""Where resumable streams keep their frames: in this process (the default) or in Redis.

A stream's log is a list of batches, one per `send` of its producer: the frames' bytes,
the id of the last frame in them (so a reader after `Last-Event-ID: N` can skip and cut
exactly), whether the final `message` frame has gone out yet, and whether the batch is
the end. The producer's `append` never waits: the live client gets its bytes first, and
the store catches up in order (batches queued while a write is under way are joined).
The first entry holds the stream's `meta` (what a reader needs to write an error end in
the stream's dialect).

`MemoryStore` keeps the batches in a list and wakes its readers with one future; the
log is dropped `RESUME_TTL_S` after the end (or sooner, oldest first, when the ended logs
pass `MAX_KEPT_BYTES` together). `RedisStore` keeps them in a Redis Stream
(`XADD`, one writer per process pipelining every stream's batches; the readers of a process
share one `XREAD BLOCK`: `BlockingReads`), with a producer lease
(a key the producing process refreshes every `SSE_HEARTBEAT_S / 2`, expiring after
`SSE_HEARTBEAT_S`): a reader that finds the lease gone and no end knows the producer
died. `DELETE` reaches a producer in another process over pub/sub. Only commands that
Redis 5+ and Valkey share are used. `require_redis` refuses to start without the Redis
that `REDIS_URL` names.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple, Protocol, cast

from .errors import StreamNotFoundError
from .settings import redacted

log = logging.getLogger("streamgate")

#: Most bytes of frames one resumable stream keeps; past it the stream ends with an error.
MAX_LOG_BYTES = 8 * 1024 * 1024


class Batch(NamedTuple):
    """What one `send` of a producer carried."""

    last_id: int  # the id of the last frame sent so far (0: none yet)
    data: bytes
    final_sent: bool  # the final `message` frame has been sent (in this batch or before)
    end: bool  # the stream's last bytes


class StreamLost(Exception):
    """The stream can no longer be read to its end: its producer died, or the store failed."""


class StreamLog(Protocol):
    """The producer's handle on its stream's log."""

    failed: BaseException | None

    def append(self, batch: Batch) -> None:
        """Queue `batch` for the log; never waits."""
        ...

    async def close(self) -> None:
        """Wait until the batches appended are stored (bounded); stop the log's upkeep."""
        ...


class StreamReader(Protocol):
    meta: bytes

    def batches(self) -> AsyncIterator[Batch]:
        """Every batch in order, then the live ones, up to the end batch; raises
        `StreamLost` if the end can never come."""
        ...


class StreamStore(Protocol):
    async def start(self) -> None: ...

    async def create(self, stream_id: str, meta: bytes, on_cancel: Callable[[], None]) -> StreamLog:
        """A new stream's log; `on_cancel` is called when a `DELETE` names the stream."""
        ...

    async def open(self, stream_id: str) -> StreamReader:
        """A reader from the first batch; `StreamNotFoundError` for an unknown or expired id."""
        ...

    async def cancel(self, stream_id: str) -> None:
        """Ask the stream's producer to stop; `StreamNotFoundError` for an unknown id."""
        ...

    async def aclose(self) -> None: ...


def not_found(stream_id: str) -> StreamNotFoundError:
    return StreamNotFoundError(
        f"no stream {stream_id!r}: it does not exist, has expired (RESUME_TTL_S), or lives in "
        "another process and REDIS_URL is not set"
    )


# --- in this process -------------------------------------------------------------------


class MemoryLog:
    __slots__ = ("meta", "batches", "ended", "waiter", "on_cancel", "expire", "failed")

    def __init__(self, meta: bytes, on_cancel: Callable[[], None], expire: Callable[[], object]) -> None:
        self.meta = meta
        self.expire = expire
        self.batches: list[Batch] = []
        self.ended = False
        self.waiter: asyncio.Future[None] | None = None
        self.on_cancel = on_cancel
        self.failed: BaseException | None = None

    def append(self, batch: Batch) -> None:
        if self.ended:
            return
        self.batches.append(batch)
        self.ended = batch.end
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            waiter.set_result(None)

    async def close(self) -> None:
        self.expire()

    async def changed(self) -> None:
        if self.waiter is None:
            self.waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self.waiter)  # a reader leaving must not cancel the others' wait


class MemoryReader:
    __slots__ = ("log", "meta")

    def __init__(self, stream_log: MemoryLog) -> None:
        self.log = stream_log
        self.meta = stream_log.meta

    async def batches(self) -> AsyncIterator[Batch]:
        stream_log, index = self.log, 0
        while True:
            while index < len(stream_log.batches):
                batch = stream_log.batches[index]
                index += 1
                yield batch
                if batch.end:
                    return
            await stream_log.changed()


#: Most bytes of frames the ended streams of a process keep together (in this process);
#: past it the oldest ended stream is forgotten before its `RESUME_TTL_S` (a resume of it
#: is then a `404`, as after its expiry), so streams started and left over and over cannot
#: pile up for the TTL.
MAX_KEPT_BYTES = 256 * 1024 * 1024


class MemoryStore:
    """Streams kept in this process: a resume must reach the same worker."""

    def __init__(self, ttl_s: float, max_kept_bytes: int = MAX_KEPT_BYTES) -> None:
        self.ttl_s = ttl_s
        self.logs: dict[str, MemoryLog] = {}
        self.max_kept_bytes = max_kept_bytes
        #: The ended streams still kept, oldest first, with their sizes.
        self.kept: dict[str, int] = {}
        self.kept_bytes = 0

    async def start(self) -> None:
        return None

    async def create(self, stream_id: str, meta: bytes, on_cancel: Callable[[], None]) -> MemoryLog:
        stream_log = MemoryLog(meta, on_cancel, lambda: self.keep(stream_id))
        self.logs[stream_id] = stream_log
        return stream_log

    def keep(self, stream_id: str) -> None:
        """The stream ended: keep it `ttl_s`, within `max_kept_bytes` for all."""
        stream_log = self.logs.get(stream_id)
        if stream_log is None or stream_id in self.kept:
            return
        size = sum(len(batch.data) for batch in stream_log.batches)
        self.kept[stream_id] = size
        self.kept_bytes += size
        asyncio.get_running_loop().call_later(self.ttl_s, self.forget, stream_id)
        while self.kept_bytes > self.max_kept_bytes and len(self.kept) > 1:
            self.forget(next(iter(self.kept)))

    def forget(self, stream_id: str) -> None:
        size = self.kept.pop(stream_id, None)
        if size is not None:
            self.kept_bytes -= size
            self.logs.pop(stream_id, None)

    async def open(self, stream_id: str) -> MemoryReader:
        stream_log = self.logs.get(stream_id)
        if stream_log is None:
            raise not_found(stream_id)
        return MemoryReader(stream_log)

    async def cancel(self, stream_id: str) -> None:
        stream_log = self.logs.get(stream_id)
        if stream_log is None:
            raise not_found(stream_id)
        if not stream_log.ended:
            stream_log.on_cancel()

    async def aclose(self) -> None:
        return None


# --- in Redis --------------------------------------------------------------------------

CANCEL_CHANNEL = b"streamgate:cancel"
#: Entries read per XRANGE/XREAD call.
PAGE = 512


def log_key(stream_id: str) -> bytes:
    return b"streamgate:stream:" + stream_id.encode()


def lease_key(stream_id: str) -> bytes:
    return b"streamgate:stream:" + stream_id.encode() + b":lease"


def batch_fields(batch: Batch) -> dict[bytes, bytes | int]:
    return {b"l": batch.last_id, b"d": batch.data, b"s": batch.final_sent | batch.end << 1}


def batch_of(fields: dict[bytes, bytes]) -> Batch:
    state = int(fields[b"s"])
    return Batch(int(fields[b"l"]), fields[b"d"], bool(state & 1), bool(state & 2))


class RedisLog:
    """A stream's handle on the store's shared writer (`RedisStore.write`)."""

    def __init__(self, store: RedisStore, stream_id: str, on_cancel: Callable[[], None]) -> None:
        self.store = store
        self.stream_id = stream_id
        self.on_cancel = on_cancel
        self.failed: BaseException | None = None
        self.written = asyncio.get_running_loop().create_future()  # done once the end is stored

    def append(self, batch: Batch) -> None:
        if self.failed is None:
            self.store.queue(self, batch)

    async def close(self) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self.written), self.store.lease_ms / 1000)
        except TimeoutError:
            self.failed = TimeoutError("the stream's end was not stored in time")
        self.store.live.pop(self.stream_id, None)


class RedisReader:
    def __init__(
        self,
        store: RedisStore,
        stream_id: str,
        meta: bytes,
        cursor: bytes,
        entries: list[tuple[bytes, dict[bytes, bytes]]],
    ) -> None:
        self.store = store
        self.stream_id = stream_id
        self.meta = meta
        self.cursor = cursor
        self.entries = entries

    async def batches(self) -> AsyncIterator[Batch]:
        redis, key = self.store.redis, log_key(self.stream_id)
        entries, cursor = self.entries, self.cursor
        block_ms = max(1, self.store.lease_ms // 2)
        try:
            while True:
                for cursor, fields in entries:  # noqa: B007 - the last one read is where the next read starts
                    batch = batch_of(fields)
                    yield batch
                    if batch.end:
                        return
                entries = await self.store.reads.wait(key, cursor, block_ms / 1000)
                if entries:
                    continue
                entries = []
                if not await redis.exists(lease_key(self.stream_id)):
                    found = await redis.xread(
                        {key: cursor}, count=PAGE
                    )  # the end may have come with the lease's delete
                    if not found:
                        raise StreamLost("the stream's generator was lost")
                    entries = cast(Entries, found[0][1])  # type: ignore[index]  # a list of [key, entries] pairs
        except StreamLost:
            raise
        except Exception as error:  # noqa: BLE001
            log.warning("the stream store failed while reading stream %s: %s", self.stream_id, redacted(str(error)))
            raise StreamLost("the stream store failed; the stream cannot be read to its end") from None


Entries = list[tuple[bytes, dict[bytes, bytes]]]


def entry_id(value: bytes) -> tuple[int, int]:
    """A Redis Stream entry id (`1700000000000-3`) as numbers, for comparing."""
    ms, _, seq = value.partition(b"-")
    return int(ms), int(seq or 0)


class _Waiter:
    __slots__ = ("cursor", "deadline", "future", "key")

    def __init__(self, key: bytes, cursor: bytes, future: asyncio.Future[Entries], deadline: float) -> None:
        self.key = key
        self.cursor = cursor
        self.future = future
        self.deadline = deadline


class BlockingReads:
    """Every reader of this process waiting for a stream's next entries, served by one
    `XREAD BLOCK` on one connection of its own that names all their streams at once, and
    fanned out: many readers of one stream, or of many, hold no connection each, so they
    can never exhaust the pool the writer and other streams need (nor Redis's
    `maxclients`). A reader that starts waiting for a stream the `XREAD` under way does not
    name interrupts it with an entry on this process's own wake-up key."""

    def __init__(self, blocking: Any, shared: Any) -> None:
        self.blocking = blocking  # a client with one connection, for the blocking reads only
        self.shared = shared  # the store's pooled client: wake-ups
        self.waiters: dict[bytes, list[_Waiter]] = {}
        self.wanted = asyncio.Event()
        #: The streams the `XREAD` under way names, with their cursors; None between reads.
        self.reading: dict[bytes, bytes] | None = None
        self.woken = False
        self.wake_key = b"streamgate:wake:" + secrets.token_hex(8).encode()
        self.wake_cursor = b"0-0"
        self.wake_ups: set[asyncio.Task[None]] = set()

    async def wait(self, key: bytes, cursor: bytes, timeout_s: float) -> Entries:
        """The entries of stream `key` after `cursor` once there are any; `[]` after
        `timeout_s` without any. Raises if Redis fails."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(key, cursor, loop.create_future(), loop.time() + timeout_s)
        self.waiters.setdefault(key, []).append(waiter)
        reading = self.reading
        if reading is None:
            self.wanted.set()
        else:
            covered = reading.get(key)
            if covered is None or entry_id(covered) > entry_id(cursor):
                self.wake()
        try:
            return await waiter.future
        finally:
            waiters = self.waiters.get(key)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self.waiters[key]

    def wake(self) -> None:
        """Cut the `XREAD` under way short (once per read), so the next one names every
        stream waited for."""
        if self.woken:
            return
        self.woken = True
        task = asyncio.get_running_loop().create_task(self._wake())
        self.wake_ups.add(task)
        task.add_done_callback(self.wake_ups.discard)

    async def _wake(self) -> None:
        try:
            pipe = self.shared.pipeline(transaction=False)
            pipe.xadd(self.wake_key, {b"w": b"1"}, maxlen=1)
            pipe.pexpire(self.wake_key, 60_000)
            await pipe.execute()
        except Exception as error:  # noqa: BLE001 - the read then ends at its block time
            log.warning("waking the stream readers in Redis failed: %s", redacted(str(error)))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.waiters:
                self.wanted.clear()
                await self.wanted.wait()
                continue
            now = loop.time()
            streams: dict[bytes, bytes] = {}
            first_deadline = None
            for key, waiters in list(self.waiters.items()):
                for waiter in waiters:
                    if waiter.future.done():  # answered; it leaves when its task runs
                        continue
                    if waiter.deadline <= now:
                        settle(waiter.future, [])
                        continue
                    cursor = streams.get(key)
                    if cursor is None or entry_id(waiter.cursor) < entry_id(cursor):
                        streams[key] = waiter.cursor
                    if first_deadline is None or waiter.deadline < first_deadline:
                        first_deadline = waiter.deadline
            if first_deadline is None:
                await asyncio.sleep(0)  # the settled waiters leave; then wait for new ones
                continue
            self.reading, self.woken = streams, False
            block_ms = max(1, int((first_deadline - now) * 1000))
            try:
                found = await self.blocking.xread(
                    {**streams, self.wake_key: self.wake_cursor}, count=PAGE, block=block_ms
                )
            except Exception as error:  # noqa: BLE001 - every waiter hears of it; the next read tries again
                for waiters in self.waiters.values():
                    for waiter in waiters:
                        if not waiter.future.done():
                            waiter.future.set_exception(error)
                await asyncio.sleep(0)
                continue
            finally:
                self.reading = None
            for key, entries in found or ():
                if key == self.wake_key:
                    self.wake_cursor = entries[-1][0]
                    continue
                read_from = entry_id(streams[key])
                for waiter in self.waiters.get(key, ()):
                    after = entry_id(waiter.cursor)
                    if after < read_from:  # came during this read, from further back: the next read has it
                        continue
                    if after == read_from:
                        settle(waiter.future, entries)
                    elif newer := [entry for entry in entries if entry_id(entry[0]) > after]:
                        settle(waiter.future, newer)


def settle(future: asyncio.Future[Entries], entries: Entries) -> None:
    if not future.done():
        future.set_result(entries)


#: Connections to Redis per process, besides the one of the blocking reads: the writer,
#: the lease keeper, the cancel listener, and the short commands of readers and `DELETE`s
#: (a command waits for a free one).
MAX_CONNECTIONS = 16


class RedisStore:
    """Streams kept in Redis (or Valkey): any worker or replica sharing it can resume them."""

    def __init__(self, url: str, ttl_s: float, heartbeat_s: float) -> None:
        import redis.asyncio  # only a deployment with REDIS_URL needs the package loaded

        # Bounded and waiting (redis-py 5.x's default pool is unbounded, 6+'s refuses past 100).
        self.pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=10, socket_connect_timeout=5
        )
        self.redis = redis.asyncio.Redis(connection_pool=self.pool)
        self.reads = BlockingReads(
            redis.asyncio.Redis.from_url(url, socket_connect_timeout=5, single_connection_client=True), self.redis
        )
        self.ttl_ms = int(ttl_s * 1000)
        self.lease_ms = max(2, int(heartbeat_s * 1000))
        #: The streams this process is producing, by id.
        self.live: dict[str, RedisLog] = {}
        #: Batches not yet sent to Redis, per stream, in order.
        self.pending: dict[RedisLog, list[Batch]] = {}
        self.wake = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.redis.ping()
        loop = asyncio.get_running_loop()
        self.tasks = [
            loop.create_task(self.write()),
            loop.create_task(self.keep_leases()),
            loop.create_task(self.listen_for_cancels()),
            loop.create_task(self.reads.run()),
        ]

    async def create(self, stream_id: str, meta: bytes, on_cancel: Callable[[], None]) -> RedisLog:
        key = log_key(stream_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(key, {b"m": meta})
        pipe.pexpire(key, self.ttl_ms + self.lease_ms)
        pipe.set(lease_key(stream_id), b"1", px=self.lease_ms)
        await pipe.execute()
        stream_log = self.live[stream_id] = RedisLog(self, stream_id, on_cancel)
        return stream_log

    async def open(self, stream_id: str) -> RedisReader:
        key = log_key(stream_id)
        entries = cast(Entries, await self.redis.xrange(key, b"-", b"+", count=PAGE))
        if not entries:
            raise not_found(stream_id)
        cursor, fields = entries[0]
        return RedisReader(self, stream_id, fields[b"m"], cursor, entries[1:])

    async def cancel(self, stream_id: str) -> None:
        if not await self.redis.exists(log_key(stream_id)):
            raise not_found(stream_id)
        local = self.live.get(stream_id)
        if local is not None:
            local.on_cancel()
        else:
            await self.redis.publish(CANCEL_CHANNEL, stream_id.encode())

    def queue(self, stream_log: RedisLog, batch: Batch) -> None:
        batches = self.pending.get(stream_log)
        if batches is None:
            self.pending[stream_log] = [batch]
            self.wake.set()
        else:
            batches.append(batch)

    async def write(self) -> None:
        """The one writer: what queued up while the last write was under way goes as one
        pipeline, one XADD per stream (the batches a stream queued meanwhile joined in
        order), so Redis's latency never holds back a producer and order is kept."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            pending, self.pending = self.pending, {}
            pipe = self.redis.pipeline(transaction=False)
            for stream_log, batches in pending.items():
                last = batches[-1]
                data = last.data if len(batches) == 1 else b"".join(batch.data for batch in batches)
                key = log_key(stream_log.stream_id)
                pipe.xadd(key, batch_fields(last._replace(data=data)))  # type: ignore[arg-type]  # redis-py's narrow stub
                if last.end:
                    pipe.pexpire(key, self.ttl_ms)
                    pipe.delete(lease_key(stream_log.stream_id))
            try:
                await pipe.execute()
            except Exception as error:  # noqa: BLE001 - a store failure fails these streams, not the server
                log.warning("the stream store failed: %s", redacted(str(error)))
                for stream_log in pending:
                    stream_log.failed = error
                    self.settle(stream_log)
                continue
            for stream_log, batches in pending.items():
                if batches[-1].end:
                    self.settle(stream_log)

    def settle(self, stream_log: RedisLog) -> None:
        """The stream's end is stored (or its writes failed): no more lease to keep."""
        self.live.pop(stream_log.stream_id, None)
        if not stream_log.written.done():
            stream_log.written.set_result(None)

    async def keep_leases(self) -> None:
        """Refresh the lease of every stream this process produces, every half lease."""
        while True:
            await asyncio.sleep(self.lease_ms / 2000)
            if not self.live:
                continue
            pipe = self.redis.pipeline(transaction=False)
            for stream_id in self.live:
                pipe.set(lease_key(stream_id), b"1", px=self.lease_ms)
                pipe.pexpire(log_key(stream_id), self.ttl_ms + self.lease_ms)
            try:
                await pipe.execute()
            except Exception as error:  # noqa: BLE001
                log.warning("refreshing the stream leases in Redis failed: %s", redacted(str(error)))

    async def listen_for_cancels(self) -> None:
        """`DELETE`s that reached another process, for the streams produced here."""
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CANCEL_CHANNEL)
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    local = self.live.get(message["data"].decode())
                    if local is not None:
                        local.on_cancel()
            except Exception as error:  # noqa: BLE001
                log.warning("listening for stream cancels in Redis failed (retrying): %s", redacted(str(error)))
                await asyncio.sleep(0.5)
            finally:
                await pubsub.aclose()

    async def aclose(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.reads.blocking.aclose()
        await self.redis.aclose()
        await self.pool.disconnect()


def require_redis(url: str) -> None:
    """Ping Redis once when the app is built; if that fails, say so in one line and exit
    with status 2 (`python server.py`, `streamgate` and `uvicorn streamgate.server:app`
    all stop here)."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
    except Exception as error:  # noqa: BLE001 - any failure: the server must not start
        print(
            f"REDIS_URL={redacted(url)} cannot be reached ({redacted(str(error))}); start Redis or unset REDIS_URL",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
