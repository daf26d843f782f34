"""Several keys for one provider (`OPENAI_API_KEY=sk-a,sk-b`).

Each upstream request goes out with the key that has the fewest requests in flight among
those not resting (ties taken in turn). A key answered `429` rests for the upstream's
`Retry-After` (else `DEFAULT_REST_S`); one answered `401`/`403` rests until the process
restarts. Resting only chooses among keys: when every key rests, the one whose rest ends
first is used, so a single key behaves as one key always did.

With `REDIS_URL` every worker and replica shares the rests: a rest is written to Redis
(`streamgate:key-rest:<provider>:<hash of the key>`, expiring with the rest) and each
ring reads its keys' rests at most once per `SYNC_S`, in the background: choosing a key
never waits for Redis. A `401`/`403` rest is shared for `SHARED_REJECTED_S` (each
process that then meets the key's refusal itself keeps it until it restarts).

Keys are named by position (1 first) in metrics and logs, never by value. A provider
with one key has no ring at all: nothing here runs on its requests.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
import math
import time
import weakref
from typing import Any

from . import metrics

log = logging.getLogger("streamgate")

#: How long a key rests after a `429` without a usable `Retry-After`.
DEFAULT_REST_S = 60.0
#: How often a ring reads the shared rests from Redis (at most; only while it is used).
SYNC_S = 1.0
#: How long a key refused with `401`/`403` stays resting in Redis for the other processes.
SHARED_REJECTED_S = 3600.0
#: Header names that carry a provider key.
KEY_HEADERS = frozenset({b"authorization", b"x-api-key", b"x-goog-api-key", b"api-key"})


def split_keys(value: str | None) -> tuple[str, ...]:
    """The keys of a `<PROVIDER>_API_KEY` value: comma-separated, blanks dropped."""
    if not value:
        return ()
    return tuple(key.strip() for key in value.split(",") if key.strip())


def first_key(value: str | None) -> str | None:
    """The key a provider's SDK client is built with (the first; `None`: not configured)."""
    keys = split_keys(value)
    return keys[0] if keys else None


def rest_seconds(retry_after: str | None) -> float:
    """`Retry-After` (seconds or an HTTP date) as seconds from now; `DEFAULT_REST_S` without one."""
    if retry_after:
        try:
            seconds = float(retry_after)
            if math.isfinite(seconds):
                return max(seconds, 0.0)
        except ValueError:
            try:
                return max(email.utils.parsedate_to_datetime(retry_after).timestamp() - time.time(), 0.0)
            except (TypeError, ValueError):
                pass
    return DEFAULT_REST_S


class SharedRests:
    """The rests of every process, in Redis (one client per ring, made on first use)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._redis: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None  # where `_redis` was made
        self._tasks: set[asyncio.Task[None]] = set()

    def _client(self) -> Any:
        if self._redis is None:
            import redis.asyncio  # only a deployment with REDIS_URL and several keys loads it

            self._redis = redis.asyncio.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=2)
            self._loop = asyncio.get_running_loop()
        return self._redis

    def spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def write(self, name: str, until: float, ttl_s: float) -> None:
        try:
            await self._client().set(name, repr(until), px=max(int(ttl_s * 1000), 1))
        except Exception as error:  # noqa: BLE001 - Redis down: the rest stays local
            log.warning("could not share a key's rest in Redis: %s", error)

    async def read(self, names: list[str]) -> list[float]:
        values = await self._client().mget(names)
        return [float(value) if value is not None else 0.0 for value in values]

    async def aclose(self) -> None:
        """Close the client, when it belongs to the running loop (its app's)."""
        if self._loop is not asyncio.get_running_loop():
            return
        for task in list(self._tasks):
            task.cancel()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None


class KeyRing:
    """The keys of one provider, their requests in flight and their rests (wall-clock
    `time.time()` ends, so that Redis can share them)."""

    __slots__ = (
        "provider",
        "keys",
        "in_flight",
        "rest_until",
        "_next",
        "_shared",
        "_names",
        "_synced_at",
        "_requests",
        "__weakref__",
    )

    def __init__(self, provider: str, keys: tuple[str, ...], shared: SharedRests | None = None) -> None:
        self.provider = provider
        self.keys = keys
        self.in_flight = [0] * len(keys)
        self.rest_until = [0.0] * len(keys)
        self._next = 0
        self._shared = shared
        self._names = [
            f"streamgate:key-rest:{provider}:{hashlib.sha256(key.encode()).hexdigest()[:16]}" for key in keys
        ]
        self._synced_at = 0.0
        self._requests = [metrics.KEY_REQUESTS.labels(provider, str(index + 1)) for index in range(len(keys))]

    def choose(self) -> int:
        """The index of the key for the next request (counted in flight until `release`)."""
        now = time.time()
        if self._shared is not None and now >= self._synced_at + SYNC_S:
            self._synced_at = now
            self._shared.spawn(self._sync())
        count = len(self.keys)
        best = -1
        for step in range(count):
            index = (self._next + step) % count
            if self.rest_until[index] <= now and (best < 0 or self.in_flight[index] < self.in_flight[best]):
                best = index
        if best < 0:
            best = min(range(count), key=self.rest_until.__getitem__)
        self._next = (best + 1) % count
        self.in_flight[best] += 1
        self._requests[best].inc()
        return best

    def usable(self) -> bool:
        """Whether some key is not resting (then a request refused for its key's sake goes
        out again at once with another)."""
        now = time.time()
        return any(until <= now for until in self.rest_until)

    def release(self, index: int) -> None:
        self.in_flight[index] -= 1

    def answered(self, index: int, status: int, retry_after: str | None = None) -> bool:
        """The upstream refused a request sent with key `index`: a `429` rests it for
        `Retry-After`, a `401`/`403` until restart; other statuses change nothing. True
        when the key rested and another key is usable: the request may go out again now."""
        if status == 429:
            self.rest(index, rest_seconds(retry_after), "rate_limited")
        elif status in (401, 403):
            self.rest(index, math.inf, "rejected")
        else:
            return False
        return self.usable()

    def rest(self, index: int, seconds: float, reason: str) -> None:
        now = time.time()
        until = now + seconds
        if until <= self.rest_until[index]:
            return
        self.rest_until[index] = until
        metrics.KEY_RESTS.labels(self.provider, str(index + 1), reason).inc()
        rest = "until restart" if math.isinf(seconds) else f"{seconds:.0f} s"
        log.warning("%s key #%d rests %s (%s)", self.provider, index + 1, rest, reason)
        if self._shared is not None:
            shared_s = SHARED_REJECTED_S if math.isinf(seconds) else seconds
            self._shared.spawn(self._shared.write(self._names[index], now + shared_s, shared_s))

    async def _sync(self) -> None:
        """Take the rests other processes wrote (the longer rest wins)."""
        assert self._shared is not None
        try:
            untils = await self._shared.read(self._names)
        except Exception as error:  # noqa: BLE001 - Redis down: local rests only, retried later
            log.warning("could not read the keys' rests from Redis: %s", error)
            return
        for index, until in enumerate(untils):
            if until > self.rest_until[index]:
                self.rest_until[index] = until

    async def aclose(self) -> None:
        if self._shared is not None:
            await self._shared.aclose()


#: The ring of each SDK client built with several keys (by the adapter that built it),
#: so that every request prepared on that client (`providers.stainless.PreparedRequest`)
#: spreads over them.
_rings: weakref.WeakKeyDictionary[Any, KeyRing] = weakref.WeakKeyDictionary()
_all_rings: weakref.WeakSet[KeyRing] = weakref.WeakSet()


def ring(provider: str, value: str | None, redis_url: str | None = None) -> KeyRing | None:
    """A ring for `<PROVIDER>_API_KEY`'s `value` when it holds several keys, else None."""
    keys = split_keys(value)
    if len(keys) < 2:
        return None
    made = KeyRing(provider, keys, SharedRests(redis_url) if redis_url else None)
    _all_rings.add(made)
    return made


def attach(client: Any, provider: str, value: str | None, redis_url: str | None = None) -> KeyRing | None:
    """Give `client` (an SDK client built with the first key) a ring when `value` holds
    several keys."""
    made = ring(provider, value, redis_url)
    if made is not None:
        _rings[client] = made
    return made


def ring_of(client: Any) -> KeyRing | None:
    return _rings.get(client)


async def aclose_all() -> None:
    """Close the rings' Redis clients made in the running loop (at the app's shutdown)."""
    for made in list(_all_rings):
        await made.aclose()


def key_headers(
    ring: KeyRing, headers: list[tuple[bytes, bytes]]
) -> tuple[list[tuple[bytes, bytes]], tuple[tuple[bytes, bytes], ...]]:
    """`headers` without the one carrying the first key, and that header for each key."""
    first = ring.keys[0].encode()
    for position, (name, value) in enumerate(headers):
        if name.lower() in KEY_HEADERS and first in value:
            rest = headers[:position] + headers[position + 1 :]
            return rest, tuple((name, value.replace(first, key.encode())) for key in ring.keys)
    return headers, ()
