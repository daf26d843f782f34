"""Model routes (`[routes.<name>]` in the config file): a name clients send as `model`,
served by a list of targets `"<provider>/<model>"` with one of two strategies.

- `fallback`: the targets in order; the next one is asked only when the current one
  failed before its first token with a failure another provider may not share
  (`falls_back`), after that target's own retries. Never after the first token.
- `hedge`: when the target asked last has produced no token `hedge_after_ms` after it
  was asked, the next one is asked too; the first to produce a token wins and every
  other attempt is cancelled, its upstream connection closed at once.

"First token" is the first chunk a target's stream yields that carries output
(`carries_output`): the opener reads ahead to it (`peek`) and hands the pipeline a
stream that yields the chunks read ahead first (`replayed`). The last target that may
be asked is not read ahead: nothing could replace it, so its response head goes out as
soon as the upstream accepted, as on a plain request, and a one-target route costs no
wrapper per chunk.

A target that failed its last `BREAKER_FAILURES` attempts is skipped for
`BREAKER_OPEN_S`, then tried once (a trial) before it is trusted again. The breaker only
chooses among targets: when every target of a route is skipped, the one whose rest ends
first is asked anyway.

The config is checked once at start-up (`load_routes`): a problem is one line naming the
file, the line and what is wrong (`SettingsError`; the server exits with status 2).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Mapping
from typing import Any

from . import metrics
from .adapter import Adapter, ChunkStream
from .chat_types import Chunk, RawEvent, StreamChunk
from .config import ConfigFile
from .errors import GatewayError, ProviderAuthError, UpstreamError
from .pipeline import RoutedOpen
from .settings import SettingsError

log = logging.getLogger("streamgate")

STRATEGIES = ("fallback", "hedge")
ROUTE_KEYS = ("targets", "strategy", "hedge_after_ms")
#: `hedge_after_ms` of a hedge route that names none.
DEFAULT_HEDGE_AFTER_MS = 500.0
#: Upstream statuses after which another target may do better (besides every 5xx and a
#: provider without a key): auth, not found, timeout, conflict, rate limit.
FALLBACK_STATUSES = frozenset({401, 403, 404, 408, 409, 429})
#: Failures in a row that open a target's breaker, and how long it then stays open.
BREAKER_FAILURES = 5
BREAKER_OPEN_S = 30.0


# --- the config -----------------------------------------------------------------------


class RouteSpec:
    """One `[routes.<name>]` table, checked: `targets` as `(provider, model)` pairs."""

    __slots__ = ("name", "targets", "strategy", "hedge_after_s")

    def __init__(self, name: str, targets: list[tuple[str, str]], strategy: str, hedge_after_s: float) -> None:
        self.name = name
        self.targets = targets
        self.strategy = strategy
        self.hedge_after_s = hedge_after_s


_HEADER = r"^\s*\[\s*routes\s*\.\s*(?:{bare}|\"{quoted}\"|'{quoted}')\s*\]"


def _route_line(config: ConfigFile, name: str) -> int | None:
    """The line of `[routes.<name>]` (bare or quoted), else the first line naming it."""
    pattern = re.compile(_HEADER.format(bare=re.escape(name), quoted=re.escape(name)))
    for number, line in enumerate(config.text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return config.line_of(name) if config.text else None


def _line_in_route(config: ConfigFile, name: str, needle: str) -> int | None:
    """The first line from the route's header on (before the next table) holding `needle`."""
    start = _route_line(config, name)
    if start is None:
        return None
    lines = config.text.splitlines()
    for number in range(start, len(lines) + 1):
        line = lines[number - 1]
        if number > start and line.lstrip().startswith("["):
            break
        if needle in line:
            return number
    return start


def _error(config: ConfigFile, line: int | None, problem: str) -> SettingsError:
    where = f"{config.path}:{line}" if line is not None else str(config.path)
    return SettingsError(f"{where}: {problem}")


def load_routes(config: ConfigFile, providers: Collection[str]) -> dict[str, RouteSpec]:
    """Every route of the config file, checked against the known `providers`."""
    specs: dict[str, RouteSpec] = {}
    for name, table in config.routes.items():
        where = f"route {name!r}"
        if not isinstance(table, dict):
            raise _error(
                config,
                _route_line(config, name),
                f'{where} must be a table: [routes.{name}] with targets = ["<provider>/<model>", ...]',
            )
        if not name.strip():
            raise _error(config, _route_line(config, name), "a route's name must not be empty")
        for key in table:
            if key not in ROUTE_KEYS:
                raise _error(
                    config,
                    _line_in_route(config, name, key),
                    f"{where}: unknown key {key!r}; a route takes {', '.join(ROUTE_KEYS)}",
                )
        specs[name] = RouteSpec(name, _targets(config, name, table, providers), *_strategy(config, name, table))
    return specs


def _targets(config: ConfigFile, name: str, table: dict[str, Any], providers: Collection[str]) -> list[tuple[str, str]]:
    where = f"route {name!r}"
    targets = table.get("targets")
    if targets is None:
        raise _error(
            config, _route_line(config, name), f'{where} has no targets; add targets = ["<provider>/<model>", ...]'
        )
    if not isinstance(targets, list) or not targets:
        raise _error(
            config,
            _line_in_route(config, name, "targets"),
            f'{where}: targets must be a non-empty list of "<provider>/<model>" strings',
        )
    pairs: list[tuple[str, str]] = []
    for target in targets:
        if not isinstance(target, str):
            raise _error(
                config,
                _line_in_route(config, name, "targets"),
                f'{where}: target {target!r} is not a string; write "<provider>/<model>"',
            )
        line = _line_in_route(config, name, f'"{target}"') or _line_in_route(config, name, target)
        provider, slash, model = target.partition("/")
        if not slash or not model.strip():
            raise _error(config, line, f'{where}: target {target!r} must be "<provider>/<model>"')
        if provider not in providers:
            raise _error(
                config,
                line,
                f"{where}: target {target!r} names an unknown provider {provider!r}; valid: {', '.join(providers)}",
            )
        if (provider, model) in pairs:
            raise _error(config, line, f"{where}: target {target!r} is listed twice")
        pairs.append((provider, model))
    return pairs


def _strategy(config: ConfigFile, name: str, table: dict[str, Any]) -> tuple[str, float]:
    where = f"route {name!r}"
    strategy = table.get("strategy", "fallback")
    if strategy not in STRATEGIES:
        raise _error(
            config,
            _line_in_route(config, name, "strategy"),
            f"{where}: strategy {strategy!r} is not one of {', '.join(STRATEGIES)}",
        )
    hedge_after = table.get("hedge_after_ms")
    if hedge_after is None:
        return strategy, DEFAULT_HEDGE_AFTER_MS / 1000
    line = _line_in_route(config, name, "hedge_after_ms")
    if strategy != "hedge":
        raise _error(config, line, f'{where}: hedge_after_ms is only for strategy = "hedge"')
    if (
        isinstance(hedge_after, bool)
        or not isinstance(hedge_after, int | float)
        or not math.isfinite(hedge_after)
        or not 0 <= hedge_after <= 600_000
    ):
        raise _error(config, line, f"{where}: hedge_after_ms must be a number of milliseconds from 0 to 600000")
    return strategy, hedge_after / 1000


# --- targets and their breakers ----------------------------------------------------------


class Breaker:
    """One target's breaker: open after `BREAKER_FAILURES` failures in a row, for
    `BREAKER_OPEN_S`; then the next ask is a trial whose outcome closes or reopens it."""

    __slots__ = ("failures", "open_until", "trial")

    def __init__(self) -> None:
        self.failures = 0
        self.open_until = 0.0
        self.trial = False

    def usable(self, now: float) -> bool:
        return self.open_until == 0.0 or (now >= self.open_until and not self.trial)

    def asked(self, now: float) -> None:
        if self.open_until and now >= self.open_until:
            self.trial = True

    def success(self) -> None:
        self.failures = 0
        self.open_until = 0.0
        self.trial = False

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.trial or self.failures >= BREAKER_FAILURES:
            self.open_until = now + BREAKER_OPEN_S
            self.trial = False

    def abandoned(self) -> None:
        """Asked, then neither failed nor served (cancelled, or the request's own fault)."""
        self.trial = False


#: The breaker of a plain (not routed) target: never asked.
_UNUSED_BREAKER = Breaker()


class Target:
    """One place a request can be served: a provider's adapter and the provider's model
    name; on a route, also the route, the target's breaker and its metric series."""

    __slots__ = ("adapter", "model", "route", "breaker", "series")

    def __init__(
        self, adapter: Adapter, model: str, route: Route | None = None, breaker: Breaker | None = None
    ) -> None:
        self.adapter = adapter
        self.model = model
        self.route = route
        self.breaker = breaker or _UNUSED_BREAKER
        self.series = metrics.route_series(route.name, self.label) if route is not None else None

    @property
    def label(self) -> str:
        return f"{self.adapter.name}/{self.model}"


#: Opens `target` for one request: the dialect's own way (translated or passthrough).
TargetOpener = Callable[[Target], Awaitable[ChunkStream]]


class Route:
    """A route with its targets built (one breaker per `<provider>/<model>`, shared by
    every route that names it)."""

    __slots__ = ("name", "targets", "hedge", "hedge_after_s")

    def __init__(self, spec: RouteSpec, adapters: Mapping[str, Adapter], breakers: dict[str, Breaker]) -> None:
        self.name = spec.name
        self.hedge = spec.strategy == "hedge"
        self.hedge_after_s = spec.hedge_after_s
        self.targets = [
            Target(adapters[provider], model, self, breakers.setdefault(f"{provider}/{model}", Breaker()))
            for provider, model in spec.targets
        ]

    def candidates(self, targets: list[Target]) -> list[Target]:
        """`targets` whose breaker lets them be asked now; when none, the one whose
        breaker reopens first."""
        for target in targets:
            if target.breaker.open_until:
                break
        else:
            return targets  # every breaker closed: the common case
        now = time.monotonic()
        usable = [target for target in targets if target.breaker.usable(now)]
        for target in targets:
            if target not in usable and target.series is not None:
                target.series.skipped.inc()
        return usable or [min(targets, key=lambda target: target.breaker.open_until)]


def build_routes(specs: Mapping[str, RouteSpec], adapters: Mapping[str, Adapter]) -> dict[str, Route]:
    breakers: dict[str, Breaker] = {}
    return {name: Route(spec, adapters, breakers) for name, spec in specs.items()}


# --- opening a route ----------------------------------------------------------------------


def falls_back(error: GatewayError) -> bool:
    """Whether another target may succeed where this one failed: the provider's key
    missing or refused, 403, 404, 408, 409, 429, any 5xx (529 too), a timeout, a
    connection failure. A 400, 413, 422 (from the upstream or our own checks) is the
    request's own fault, answered at once."""
    return isinstance(error, ProviderAuthError) or error.status in FALLBACK_STATUSES or error.status >= 500


def carries_output(chunk: Chunk) -> bool:
    """A chunk that is output a client sees: text, the end, reasoning, a tool call, a
    passthrough's token event. Not: an empty non-final chunk, a passthrough's envelope."""
    if isinstance(chunk, StreamChunk):
        return bool(chunk.content) or chunk.finish_reason is not None
    if isinstance(chunk, RawEvent):
        return chunk.token
    return True


async def peek(stream: ChunkStream) -> list[Chunk]:
    """The chunks of `stream` up to and including its first output (all of them if it ends
    first). On any failure, the stream is closed (its connection with it)."""
    read: list[Chunk] = []
    try:
        async for chunk in aiter(stream):
            read.append(chunk)
            if carries_output(chunk):
                break
    except BaseException:
        await stream.aclose()
        raise
    return read


def replayed(read: list[Chunk], stream: ChunkStream) -> ChunkStream:
    """`stream` with the chunks `peek` read yielded first."""

    async def chunks() -> AsyncGenerator[Chunk, None]:
        for chunk in read:
            yield chunk
        async for chunk in aiter(stream):
            yield chunk

    return ChunkStream(chunks(), stream.aclose)


#: Attempts cancelled (hedge losers) still ending: held so that they are not collected.
_abandoned: set[asyncio.Task[Any]] = set()


def _abandon(task: asyncio.Task[tuple[ChunkStream, list[Chunk]]]) -> None:
    """Cancel an attempt; one that had already opened its stream gets it closed."""
    task.cancel()
    _abandoned.add(task)
    task.add_done_callback(_abandoned_done)


def _abandoned_done(task: asyncio.Task[tuple[ChunkStream, list[Chunk]]]) -> None:
    _abandoned.discard(task)
    if task.cancelled() or task.exception() is not None:
        return
    closing = asyncio.get_running_loop().create_task(task.result()[0].aclose())
    _abandoned.add(closing)
    closing.add_done_callback(_abandoned.discard)


def as_gateway_error(error: BaseException, target: Target) -> GatewayError:
    if isinstance(error, GatewayError):
        return error
    log.error("opening %s failed", target.label, exc_info=error)
    return UpstreamError("the gateway failed while opening the upstream", provider=target.adapter.name)


class RouteOpener(RoutedOpen):
    """`Call.open` of one request to a route (`pipeline.RoutedOpen`): asks the route's
    targets by its strategy and notes what served (`provider`, `model`, `attempts`)."""

    __slots__ = ("_route", "_targets", "_open_target")

    def __init__(self, route: Route, targets: list[Target], open_target: TargetOpener) -> None:
        super().__init__(route.name)
        self._route = route
        self._targets = targets
        self._open_target = open_target

    async def __call__(self) -> ChunkStream:
        candidates = self._route.candidates(self._targets)
        if self._route.hedge and len(candidates) > 1:
            return await self._hedge(candidates)
        return await self._fallback(candidates)

    def _ask(self, target: Target) -> None:
        self.attempts += 1
        target.breaker.asked(time.monotonic())
        if target.series is not None:
            target.series.attempts.inc()

    def _served(self, target: Target) -> None:
        self.provider = target.adapter.name
        self.model = target.model

    def _failed(self, target: Target, error: GatewayError) -> bool:
        """Note `target`'s failure; whether another target may be asked."""
        self._served(target)
        if falls_back(error):
            target.breaker.failure(time.monotonic())
            return True
        target.breaker.abandoned()
        return False

    async def _fallback(self, candidates: list[Target]) -> ChunkStream:
        last = len(candidates) - 1
        for index, target in enumerate(candidates):
            self._ask(target)
            if index and target.series is not None:
                target.series.fallbacks.inc()
            try:
                stream = await self._open_target(target)
                if index == last:
                    target.breaker.success()
                    self._served(target)
                    return stream
                read = await peek(stream)
            except asyncio.CancelledError:
                target.breaker.abandoned()
                raise
            except Exception as failure:  # noqa: BLE001 - a target's failure, whatever it is
                error = as_gateway_error(failure, target)
                if not self._failed(target, error) or index == last:
                    raise error from None
                continue
            target.breaker.success()
            self._served(target)
            return replayed(read, stream)
        raise AssertionError("a route has at least one target")

    async def _attempt(self, target: Target) -> tuple[ChunkStream, list[Chunk]]:
        stream = await self._open_target(target)
        return stream, await peek(stream)

    async def _hedge(self, candidates: list[Target]) -> ChunkStream:
        """Ask the first target; each time the one asked last has no token after
        `hedge_after_s` (or has failed), ask the next; the first token wins."""
        loop = asyncio.get_running_loop()
        running: dict[asyncio.Task[tuple[ChunkStream, list[Chunk]]], tuple[Target, bool]] = {}
        waiting = iter(candidates)
        deadline = 0.0
        error: GatewayError | None = None

        def ask(hedged: bool) -> bool:
            """Ask the next target (`hedged`: because the last one is late, else because
            it failed); False when there is none left."""
            nonlocal deadline
            target = next(waiting, None)
            if target is None:
                return False
            if self.attempts and target.series is not None:
                (target.series.hedges_started if hedged else target.series.fallbacks).inc()
            self._ask(target)
            running[loop.create_task(self._attempt(target))] = (target, hedged)
            deadline = loop.time() + self._route.hedge_after_s
            return True

        ask(False)
        more = True
        try:
            while running:
                timeout = max(deadline - loop.time(), 0.0) if more else None
                done, _ = await asyncio.wait(running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    more = ask(True)
                    continue
                won: tuple[Target, bool, ChunkStream, list[Chunk]] | None = None
                fatal: GatewayError | None = None
                for task in done:
                    target, hedged = running.pop(task)
                    failure = task.exception()
                    if failure is None:
                        if won is None:
                            won = (target, hedged, *task.result())
                        else:
                            _abandon(task)  # a tie: the later one is closed
                        continue
                    error = as_gateway_error(failure, target)
                    if not self._failed(target, error):
                        fatal = error
                if won is not None:
                    target, hedged, stream, read = won
                    self._stop(running)
                    target.breaker.success()
                    self._served(target)
                    if hedged and target.series is not None:
                        target.series.hedges_won.inc()
                    return replayed(read, stream)
                if fatal is not None:
                    raise fatal
                if not running and more:  # every asked target failed: the next one now
                    more = ask(False)
            assert error is not None
            raise error
        finally:
            self._stop(running)

    @staticmethod
    def _stop(running: dict[asyncio.Task[tuple[ChunkStream, list[Chunk]]], tuple[Target, bool]]) -> None:
        for task, (target, _) in running.items():
            target.breaker.abandoned()
            _abandon(task)
        running.clear()
