"""Callers (`[[callers]]` in the config file): each team's key, the models it may use and
its limits — streams at once, requests and tokens per minute.

With callers configured, `http_guards.BearerAuth` picks the caller by the request's key
(its SHA-256 looked up, never the key kept) and puts it in the ASGI scope (`CALLER`);
`pipeline.ChatEndpoint` then checks the model (`403 forbidden_model`) and asks the
caller's meter to admit the request (`429 rate_limited` with OpenAI's `x-ratelimit-*`
headers) before any upstream work. The lease it gets back ends with the request
(`pipeline.end_request`): the stream slot is freed and the tokens the upstream reported
are charged.

Requests and tokens per minute are generic cell rate algorithms (a "theoretical arrival
time" per caller: the whole minute's allowance may be used at once, and it comes back
evenly): one number per limit, no per-request list. Tokens are charged after the answer,
so a stream may overdraw; the next request then waits. `LocalMeter` counts in this
process; `RedisMeter` (with `REDIS_URL`) counts in Redis for every worker and replica,
one Lua script per request, the scripts of concurrent requests joined into one pipeline.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import itertools
import logging
import math
import re
import secrets
import time
from collections.abc import Sequence
from typing import Any, Protocol

from . import metrics
from .config import ConfigFile
from .errors import ForbiddenModelError, RateLimitedError, UpstreamError
from .settings import SettingsError

log = logging.getLogger("streamgate")

#: The ASGI scope key holding the request's `Caller` (set by `http_guards.BearerAuth`).
CALLER = "streamgate.caller"
#: The caller `GATEWAY_API_KEY` stands for when the config file has callers.
DEFAULT_CALLER = "default"
#: Seconds of the window the per-minute limits are counted over.
MINUTE = 60.0

FIELDS = ("name", "key_sha256", "models", "max_streams", "requests_per_minute", "tokens_per_minute")
LIMITS = ("max_streams", "requests_per_minute", "tokens_per_minute")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SHA256 = re.compile(r"[0-9a-fA-F]{64}")
#: Most model names whose verdict a caller remembers (they come from requests).
MAX_REMEMBERED_MODELS = 1024


class Limits:
    """A caller's limits; None: that one is not limited."""

    __slots__ = LIMITS

    def __init__(
        self,
        max_streams: int | None = None,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
    ) -> None:
        self.max_streams = max_streams
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute

    def __bool__(self) -> bool:
        return any(getattr(self, name) is not None for name in LIMITS)


class Caller:
    """One `[[callers]]` table (or `default`): its name, the models it may use, its limits."""

    __slots__ = ("_pattern", "_verdicts", "limits", "meter", "models", "name", "series")

    def __init__(self, name: str, models: Sequence[str] | None = None, limits: Limits | None = None) -> None:
        self.name = name
        self.models = tuple(models) if models is not None else None
        self.limits = limits or Limits()
        self.meter: Meter = UNMETERED
        self._pattern = (
            re.compile("|".join(fnmatch.translate(glob) for glob in self.models)) if self.models is not None else None
        )
        self._verdicts: dict[str, bool] = {}
        self.series = metrics.caller_series(name)

    def may_use(self, name: str) -> bool:
        """Whether a glob of `models` matches `name` (case-sensitive; no `models`: any)."""
        if self._pattern is None:
            return True
        verdict = self._verdicts.get(name)
        if verdict is None:
            if len(self._verdicts) >= MAX_REMEMBERED_MODELS:
                self._verdicts.clear()
            verdict = self._verdicts[name] = self._pattern.match(name) is not None
        return verdict

    def check_model(self, requested: str | None, provider: str, model: str, route: str | None = None) -> None:
        """`403 forbidden_model` unless allowed: a route by its name only (its targets may be
        any provider's); any other model by the name the client sent (`requested`) or as
        the `<provider>/<model>` that serves it."""
        if self._pattern is None:
            return
        if route is not None:
            if self.may_use(route):
                return
            shown = route
        else:
            served = f"{provider}/{model}"
            if (requested is not None and self.may_use(requested)) or self.may_use(served):
                return
            shown = requested if requested is not None else served
        raise ForbiddenModelError(
            f"$.model: the caller {self.name!r} may not use the model {shown[:200]!r}; "
            f"its models: {', '.join(self.models or ())}"
        )

    async def admit(self, streaming: bool) -> Lease:
        """This request's lease, or `429 rate_limited` when a limit is reached."""
        lease = await self.meter.admit(self, streaming)
        self.series.requests.inc()
        if streaming:
            self.series.in_flight.inc()
        return lease

    def refused(self, error_type: str) -> None:
        """A request of this caller answered with an error before it ran."""
        self.series.requests.inc()
        self.series.errors(error_type).inc()


class Lease:
    """One admitted request: ended once, with the usage the upstream reported."""

    __slots__ = ("caller", "ended", "slot", "streaming")

    def __init__(self, caller: Caller, streaming: bool, slot: str | None = None) -> None:
        self.caller = caller
        self.streaming = streaming
        self.slot = slot  # the stream's place among the caller's `max_streams` (its member in Redis)
        self.ended = False

    def end(self, tokens: int, error_type: str | None) -> None:
        if self.ended:
            return
        self.ended = True
        caller = self.caller
        caller.meter.release(self, tokens)
        series = caller.series
        if self.streaming:
            series.in_flight.dec()
        if tokens:
            series.tokens.inc(tokens)
        if error_type is not None:
            series.errors(error_type).inc()


# --- the verdict ---------------------------------------------------------------------------


class Verdict:
    """What a meter found: `refused` names the limit reached (None: admitted), with the
    seconds to wait; the requests and tokens windows as they stand after this request,
    in seconds of the minute used (`requests_used_s`, `tokens_used_s`)."""

    __slots__ = ("refused", "requests_used_s", "retry_after_s", "tokens_used_s")

    def __init__(self, refused: str | None, retry_after_s: float, requests_used_s: float, tokens_used_s: float) -> None:
        self.refused = refused
        self.retry_after_s = retry_after_s
        self.requests_used_s = requests_used_s
        self.tokens_used_s = tokens_used_s


def judge(limits: Limits, now: float, requests_tat: float, tokens_tat: float, streams: int, streaming: bool) -> Verdict:
    """The verdict for one request (the in-process meter; `ADMIT_SCRIPT` is the same in
    Lua). `*_tat`: when the window of that limit is empty again."""
    tokens_used = max(tokens_tat - now, 0.0)
    requests_used = max(requests_tat - now, 0.0)
    rpm, tpm, max_streams = limits.requests_per_minute, limits.tokens_per_minute, limits.max_streams
    if tpm is not None and tokens_used >= MINUTE:
        return Verdict("tokens_per_minute", tokens_used - MINUTE + MINUTE / tpm, requests_used, tokens_used)
    if rpm is not None and requests_used + MINUTE / rpm > MINUTE:
        return Verdict("requests_per_minute", requests_used + MINUTE / rpm - MINUTE, requests_used, tokens_used)
    if streaming and max_streams is not None and streams >= max_streams:
        return Verdict("max_streams", 1.0, requests_used, tokens_used)
    return Verdict(None, 0.0, requests_used + (MINUTE / rpm if rpm is not None else 0.0), tokens_used)


def duration(seconds: float) -> str:
    """A wait as OpenAI writes it in `x-ratelimit-reset-*` (Go's form): `20ms`, `1.5s`, `6m0s`."""
    ms = max(math.ceil(seconds * 1000), 0)
    if ms < 1000:
        return f"{ms}ms"
    minutes, ms = divmod(ms, 60_000)
    text = f"{ms / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{minutes}m{text}" if minutes else text


def rate_limited(caller: Caller, verdict: Verdict) -> RateLimitedError:
    """The `429` for `verdict`: `Retry-After` (whole seconds, at least 1) and OpenAI's
    `x-ratelimit-*` headers of the limits the caller has."""
    limits = caller.limits
    limit = getattr(limits, verdict.refused or "")
    wait = max(math.ceil(verdict.retry_after_s), 1)
    what = {
        "max_streams": "streams at once",
        "requests_per_minute": "requests per minute",
        "tokens_per_minute": "tokens per minute",
    }[verdict.refused or "max_streams"]
    error = RateLimitedError(
        f"the caller {caller.name!r} is at its limit of {limit} {what} ({verdict.refused}); retry after {wait} s",
        retry_after=str(wait),
    )
    error.headers = limit_headers(limits, verdict)
    return error


def limit_headers(limits: Limits, verdict: Verdict) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = [(b"retry-after-ms", b"%d" % math.ceil(verdict.retry_after_s * 1000))]
    for kind, per_minute, used_s in (
        ("requests", limits.requests_per_minute, verdict.requests_used_s),
        ("tokens", limits.tokens_per_minute, verdict.tokens_used_s),
    ):
        if per_minute is None:
            continue
        remaining = max(math.floor(per_minute * (MINUTE - used_s) / MINUTE + 1e-9), 0)
        headers += [
            (b"x-ratelimit-limit-" + kind.encode(), b"%d" % per_minute),
            (b"x-ratelimit-remaining-" + kind.encode(), b"%d" % remaining),
            (b"x-ratelimit-reset-" + kind.encode(), duration(used_s).encode()),
        ]
    return headers


# --- meters ----------------------------------------------------------------------------------


class Meter(Protocol):
    """Where a caller's counts live."""

    async def admit(self, caller: Caller, streaming: bool) -> Lease:
        """A lease, or raises the `429` (`rate_limited`)."""
        ...

    def release(self, lease: Lease, tokens: int) -> None:
        """Free the lease's stream slot and charge `tokens`; never waits."""
        ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


class Unmetered:
    """A caller without limits: nothing to count."""

    async def admit(self, caller: Caller, streaming: bool) -> Lease:
        return Lease(caller, streaming)

    def release(self, lease: Lease, tokens: int) -> None:
        return None

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


UNMETERED = Unmetered()


class Counts:
    __slots__ = ("requests_tat", "streams", "tokens_tat")

    def __init__(self) -> None:
        self.requests_tat = self.tokens_tat = 0.0
        self.streams = 0


class LocalMeter(Unmetered):
    """Counts kept in this process (no `REDIS_URL`)."""

    def __init__(self) -> None:
        self.counts: dict[str, Counts] = {}

    async def admit(self, caller: Caller, streaming: bool) -> Lease:
        counts = self.counts.get(caller.name)
        if counts is None:
            counts = self.counts[caller.name] = Counts()
        limits = caller.limits
        now = time.monotonic()
        verdict = judge(limits, now, counts.requests_tat, counts.tokens_tat, counts.streams, streaming)
        if verdict.refused is not None:
            raise rate_limited(caller, verdict)
        if limits.requests_per_minute is not None:
            counts.requests_tat = now + verdict.requests_used_s
        if streaming and limits.max_streams is not None:
            counts.streams += 1
            return Lease(caller, streaming, "local")
        return Lease(caller, streaming)

    def release(self, lease: Lease, tokens: int) -> None:
        caller = lease.caller
        counts = self.counts[caller.name]
        if lease.slot is not None:
            counts.streams -= 1
        tpm = caller.limits.tokens_per_minute
        if tokens and tpm is not None:
            counts.tokens_tat = max(counts.tokens_tat, time.monotonic()) + tokens * MINUTE / tpm


#: KEYS: the requests, tokens and streams keys of a caller. ARGV: requests per minute,
#: tokens per minute, max streams (0: no limit), "1" for a stream, the stream's member,
#: its lease in µs. Times are Redis's own (`TIME`, µs), so replicas' clocks do not matter.
#: Returns: the limit refused (0: none, 1 tokens, 2 requests, 3 streams), µs to wait, µs
#: of the requests and of the tokens window used (after this request).
ADMIT_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local minute = 60000000
local rpm, tpm, max_streams = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens_used = 0
if tpm > 0 then
  tokens_used = math.max(tonumber(redis.call('GET', KEYS[2]) or '0') - now, 0)
  if tokens_used >= minute then return {1, tokens_used - minute + minute / tpm, 0, tokens_used} end
end
local requests_used = 0
if rpm > 0 then
  requests_used = math.max(tonumber(redis.call('GET', KEYS[1]) or '0') - now, 0)
  if requests_used + minute / rpm > minute then
    return {2, requests_used + minute / rpm - minute, requests_used, tokens_used}
  end
end
if max_streams > 0 and ARGV[4] == '1' then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', string.format('%.0f', now))
  if redis.call('ZCARD', KEYS[3]) >= max_streams then return {3, 1000000, requests_used, tokens_used} end
  local lease = tonumber(ARGV[6])
  redis.call('ZADD', KEYS[3], string.format('%.0f', now + lease), ARGV[5])
  redis.call('PEXPIRE', KEYS[3], math.ceil(lease / 1000))
end
if rpm > 0 then
  requests_used = requests_used + minute / rpm
  redis.call('SET', KEYS[1], string.format('%.0f', now + requests_used), 'PX', math.ceil(requests_used / 1000) + 1)
end
return {0, 0, requests_used, tokens_used}
"""
#: A request's end, one command: KEYS: a caller's tokens and streams keys. ARGV: the tokens
#: used and the tokens per minute (0: none to charge), the stream's member ("": none).
END_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
if ARGV[3] ~= '' then redis.call('ZREM', KEYS[2], ARGV[3]) end
local tokens, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
if tokens == 0 or tpm == 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now) + tokens * 60000000 / tpm
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
return 0
"""
#: KEYS: a caller's streams key. ARGV: the lease in µs, then the members still running.
REFRESH_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local until_ = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1]))
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], until_, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) / 1000))
return 0
"""
REFUSED = {1: "tokens_per_minute", 2: "requests_per_minute", 3: "max_streams"}
#: Seconds a stream's slot in Redis lives unless its process renews it (every third of
#: it): the slots of a process that died come free after this.
STREAM_LEASE_S = 30.0


def keys_of(name: str) -> tuple[str, str, str]:
    base = f"streamgate:caller:{{{name}}}"
    return f"{base}:requests", f"{base}:tokens", f"{base}:streams"


class RedisMeter(Unmetered):
    """Counts kept in Redis (or Valkey), shared by every worker and replica using it.

    Each admission is one `EVALSHA`; those of requests arriving together, the charges
    and the freed slots go out in one pipeline (`flush`), so a request waits for at most
    the round trip under way and its own. Redis unreachable: the request is refused
    (`502 upstream_error`), never let through unmetered."""

    def __init__(self, url: str) -> None:
        import redis.asyncio  # only a deployment with REDIS_URL loads it

        self.redis = redis.asyncio.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
        self.shas: dict[str, str] = {}
        self.pending: list[tuple[str, tuple[str, ...], tuple[Any, ...], asyncio.Future[Any] | None]] = []
        self.flusher: asyncio.Task[None] | None = None
        self.renewer: asyncio.Task[None] | None = None
        self.prefix = secrets.token_hex(6)
        self.numbers = itertools.count()
        #: The stream slots this process holds, per caller (renewed while they run).
        self.live: dict[str, set[str]] = {}

    async def start(self) -> None:
        await self.load_scripts()
        self.renewer = asyncio.get_running_loop().create_task(self.renew())

    async def load_scripts(self) -> None:
        for script in (ADMIT_SCRIPT, END_SCRIPT, REFRESH_SCRIPT):
            self.shas[script] = await self.redis.script_load(script)

    async def aclose(self) -> None:
        if self.renewer is not None:
            self.renewer.cancel()
        if self.flusher is not None:
            await asyncio.wait([self.flusher], timeout=5)
        await self.redis.aclose()

    async def admit(self, caller: Caller, streaming: bool) -> Lease:
        limits = caller.limits
        slot = streaming and limits.max_streams is not None
        member = f"{self.prefix}:{next(self.numbers)}" if slot else ""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        args = (
            limits.requests_per_minute or 0,
            limits.tokens_per_minute or 0,
            limits.max_streams or 0,
            1 if slot else 0,
            member,
            int(STREAM_LEASE_S * 1e6),
        )
        self.queue(ADMIT_SCRIPT, keys_of(caller.name), args, future)
        try:
            refused, wait_us, requests_us, tokens_us = await future
        except Exception as error:  # noqa: BLE001 - Redis down: refuse, do not let the caller through unmetered
            log.warning("the limits store (REDIS_URL) failed: %s", error)
            raise UpstreamError("the limits store (REDIS_URL) is unreachable") from None
        verdict = Verdict(REFUSED.get(refused), wait_us / 1e6, requests_us / 1e6, tokens_us / 1e6)
        if verdict.refused is not None:
            raise rate_limited(caller, verdict)
        if slot:
            self.live.setdefault(caller.name, set()).add(member)
            return Lease(caller, streaming, member)
        return Lease(caller, streaming)

    def release(self, lease: Lease, tokens: int) -> None:
        caller = lease.caller
        tpm = caller.limits.tokens_per_minute or 0
        if lease.slot is not None:
            live = self.live.get(caller.name)
            if live is not None:
                live.discard(lease.slot)
        elif not (tokens and tpm):
            return
        self.queue(END_SCRIPT, keys_of(caller.name)[1:], (tokens, tpm, lease.slot or ""), None)

    def queue(
        self, command: str, keys: tuple[str, ...], args: tuple[Any, ...], future: asyncio.Future[Any] | None
    ) -> None:
        self.pending.append((command, keys, args, future))
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.get_running_loop().create_task(self.flush())

    async def flush(self) -> None:
        """Send what is queued, one pipeline at a time, until nothing is."""
        while self.pending:
            batch, self.pending = self.pending, []
            try:
                results = await self.execute(batch)
            except Exception as error:  # noqa: BLE001 - every waiting request gets the failure
                results = [error] * len(batch)
            for (_, _, _, future), result in zip(batch, results, strict=True):
                if future is None:
                    if isinstance(result, Exception):
                        log.warning("the limits store (REDIS_URL) failed recording a request's end: %s", result)
                elif not future.done():
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)

    async def execute(self, batch: Sequence[tuple[str, tuple[str, ...], tuple[Any, ...], Any]]) -> list[Any]:
        """The batch as one pipeline; scripts Redis lost (a restart) are loaded and run again."""
        from redis.exceptions import NoScriptError

        results = await self.pipeline(batch)
        lost = [index for index, result in enumerate(results) if isinstance(result, NoScriptError)]
        if lost:
            await self.load_scripts()
            for index, result in zip(lost, await self.pipeline([batch[index] for index in lost]), strict=True):
                results[index] = result
        return results

    async def pipeline(self, batch: Sequence[tuple[str, tuple[str, ...], tuple[Any, ...], Any]]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.evalsha(self.shas[script], len(keys), *keys, *args)
        return await pipe.execute(raise_on_error=False)

    async def renew(self) -> None:
        """Every third of `STREAM_LEASE_S`: renew the slots of the streams running here."""
        while True:
            await asyncio.sleep(STREAM_LEASE_S / 3)
            for name, members in self.live.items():
                if members:
                    self.queue(REFRESH_SCRIPT, keys_of(name)[2:], (int(STREAM_LEASE_S * 1e6), *members), None)


# --- the config file ---------------------------------------------------------------------------


class Callers:
    """Every caller, found by the SHA-256 of its key."""

    def __init__(self, by_digest: dict[bytes, Caller], meter: Meter) -> None:
        self.by_digest = by_digest
        self.meter = meter
        for caller in by_digest.values():
            if caller.limits:
                caller.meter = meter

    def find(self, key: bytes) -> Caller | None:
        """The caller whose key is `key` (by its SHA-256: a dict lookup of a digest tells a
        timing observer nothing of the key)."""
        if not key:
            return None
        return self.by_digest.get(hashlib.sha256(key).digest())

    @property
    def names(self) -> list[str]:
        return [caller.name for caller in self.by_digest.values()]


def load_callers(config: ConfigFile, gateway_api_key: str | None, redis_url: str | None = None) -> Callers | None:
    """The callers of the config file (and `default` for `GATEWAY_API_KEY`); None when the
    file has none. A table that is not right raises `SettingsError` naming the file and line."""
    tables = config.callers
    if not tables:
        return None
    by_digest: dict[bytes, Caller] = {}
    names: set[str] = set()
    for index, table in enumerate(tables):
        digest, caller = parse_caller(config, index, table)
        if caller.name in names:
            raise caller_error(
                config,
                index,
                "name",
                f"the caller name {caller.name!r} is used twice; give each [[callers]] table its own name",
            )
        if digest in by_digest:
            raise caller_error(
                config,
                index,
                "key_sha256",
                f"the caller {caller.name!r} has the same key_sha256 "
                f"as {by_digest[digest].name!r}; give each caller its own key",
            )
        names.add(caller.name)
        by_digest[digest] = caller
    if gateway_api_key:
        digest = hashlib.sha256(gateway_api_key.encode()).digest()
        if DEFAULT_CALLER in names:
            raise caller_error(
                config,
                list(names).index(DEFAULT_CALLER),
                "name",
                "the caller name 'default' is GATEWAY_API_KEY's; choose another name or unset it",
            )
        if digest in by_digest:
            raise SettingsError(
                f"GATEWAY_API_KEY is the key of the caller {by_digest[digest].name!r} in "
                f"{config.path}; give it another key"
            )
        by_digest[digest] = Caller(DEFAULT_CALLER)
    meter: Meter = LocalMeter()
    if redis_url and any(caller.limits for caller in by_digest.values()):
        meter = RedisMeter(redis_url)
    return Callers(by_digest, meter)


def parse_caller(config: ConfigFile, index: int, table: Any) -> tuple[bytes, Caller]:
    if not isinstance(table, dict):
        raise caller_error(config, index, None, "each entry of 'callers' must be a [[callers]] table")
    unknown = [key for key in table if key not in FIELDS]
    if unknown:
        raise caller_error(
            config, index, unknown[0], f"unknown key {unknown[0]!r} in [[callers]]; the keys are: {', '.join(FIELDS)}"
        )
    name = table.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise caller_error(
            config,
            index,
            "name",
            f"name = {name!r} is not valid: expected 1 to 64 letters, digits, "
            "'.', '_' or '-' (it labels metrics and log lines)",
        )
    key_sha256 = table.get("key_sha256")
    if not isinstance(key_sha256, str) or not SHA256.fullmatch(key_sha256):
        shown = "missing" if key_sha256 is None else "not 64 hex digits"
        raise caller_error(
            config,
            index,
            "key_sha256",
            f"key_sha256 of the caller {name!r} is {shown}: expected "
            "the SHA-256 of its key in hex (never the key itself)",
        )
    models = table.get("models")
    if models is not None and (
        not isinstance(models, list) or not models or not all(isinstance(glob, str) and glob for glob in models)
    ):
        raise caller_error(
            config,
            index,
            "models",
            f"models of the caller {name!r} is not valid: expected a "
            'non-empty list of model names or glob patterns ("fast", "openai/*")',
        )
    limits = {}
    for key in LIMITS:
        value = table.get(key)
        if value is not None and (type(value) is not int or value < 1):
            raise caller_error(
                config,
                index,
                key,
                f"{key} = {value!r} of the caller {name!r} is not valid: "
                "expected a whole number >= 1 (leave it out for no limit)",
            )
        limits[key] = value
    return bytes.fromhex(key_sha256), Caller(name, models, Limits(**limits))


def caller_error(config: ConfigFile, index: int, key: str | None, problem: str) -> SettingsError:
    """A `SettingsError` naming the line of `key` in the `index`th `[[callers]]` table."""
    line = table_line(config.text, index, key)
    if line is None:
        return config.error(problem, "callers")
    return SettingsError(f"{config.path}:{line}: {problem}")


def table_line(text: str, index: int, key: str | None) -> int | None:
    """The line of `key` in the `index`th `[[callers]]` table (else of its header), 1-based."""
    headers = [
        number
        for number, line in enumerate(text.splitlines(), start=1)
        if re.fullmatch(r"\s*\[\[\s*callers\s*\]\]\s*(#.*)?", line)
    ]
    if index >= len(headers):
        return None
    lines = text.splitlines()
    if key is not None:
        pattern = re.compile(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for number in range(headers[index], len(lines)):  # 0-based: the lines after the header
            if lines[number].lstrip().startswith("["):
                break  # the next table
            if pattern.match(lines[number]):
                return number + 1
    return headers[index]
