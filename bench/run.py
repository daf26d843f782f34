"""One command: start the mock, streamgate and the tutorial gateway, measure, stop them.

    python -m bench [--quick] [--provider openai,anthropic,gemini]

Everything runs on 127.0.0.1; the server under test is pinned to core 0 (`taskset -c 0`),
the mock and this load client to core 1. Each phase runs for every target in the same
round, in rotating order, so the machine's drift hits all of them alike; the figures that
matter are the ratios within one run. The openai path adds streamgate's own phases after
the rounds: tool-call frames, the open loop (fixed request rates, stepped up), `WORKERS=2`
vs 1 (unpinned) and resumable streams (in-process and Redis); a phase whose feature the
server lacks is skipped with its reason. The table is printed, the figures written to
`bench/results/<time>.json`, and every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import IO

from bench import stalls
from bench.client import (
    DIALECTS,
    HeldStreams,
    Outcome,
    Target,
    get_json,
    get_text,
    run_open_loop,
    run_streams,
)
from bench.mock_upstream import new_event_loop

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SERVER_CORE, CLIENT_CORE = "0", "1"
#: "Unpinned": every core. A child started without `taskset` would inherit this process's
#: own pinning to `CLIENT_CORE`, and `WORKERS=2` would share one core with the client.
ALL_CORES = f"0-{os.cpu_count() - 1}"
TICK_S = 1 / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Plan:
    """How much of each phase to run (counts per target and round)."""

    rounds: int
    ttft: dict[int, int]  # concurrency -> streams per round
    single_tokens: int
    many_streams: int
    many_tokens: int
    short_requests: int
    held_streams: int
    open_loop_s: float  # seconds at each rate
    saturation_requests: int  # per round and `WORKERS` setting
    resumes: int


#: The servers a run can measure besides the upstream (`--targets`), in the table's order.
SERVERS = ("streamgate", "streamgate-granian", "tutorial")
#: The table's ratio columns: name -> (numerator, denominator).
RATIOS = {
    "sg/tut": ("streamgate", "tutorial"),
    "sg/up": ("streamgate", "upstream"),
    "gr/sg": ("streamgate-granian", "streamgate"),
}
OPEN_LOOP_RATES = (250, 500, 1000, 1500, 2000, 2500)
OPEN_LOOP_TOKENS = 8
FULL = Plan(
    rounds=4,
    ttft={1: 60, 16: 320, 128: 512},
    single_tokens=20_000,
    many_streams=64,
    many_tokens=2_000,
    short_requests=1_000,
    held_streams=1_000,
    open_loop_s=8.0,
    saturation_requests=3_000,
    resumes=300,
)
QUICK = Plan(
    rounds=2,
    ttft={1: 15, 16: 64, 128: 384},
    single_tokens=4_000,
    many_streams=64,
    many_tokens=200,
    short_requests=160,
    held_streams=200,
    open_loop_s=1.0,
    saturation_requests=600,
    resumes=100,
)


# --- processes --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raise_open_files_limit() -> None:
    """1,000 held streams need ~2,000 descriptors here and in the mock (children inherit)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class Processes:
    """Every process this run started, stopped by PID at the end."""

    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str], core: str | None) -> subprocess.Popen[bytes]:
        """Start `argv` pinned to `core` (None: unpinned, on `ALL_CORES`)."""
        RESULTS.mkdir(parents=True, exist_ok=True)
        log = open(RESULTS / f"{name}.log", "wb")  # noqa: SIM115 - closed in `stop_all`
        self.logs.append(log)
        pinned = ["taskset", "-c", core if core is not None else ALL_CORES]
        process = subprocess.Popen(
            [*pinned, *argv],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE if name == "mock" else log,
            stderr=log,
        )
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process in self.started:
            self.started.remove(process)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(5)

    def stop_all(self) -> None:
        for process in reversed(self.started):
            self.stop(process)
        self.started.clear()
        for log in self.logs:
            log.close()
        self.logs.clear()


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (the worker processes of `WORKERS=2`)."""
    tree, index = [pid], 0
    while index < len(tree):
        for children in Path(f"/proc/{tree[index]}/task").glob("*/children"):
            try:
                tree.extend(int(child) for child in children.read_text().split())
            except OSError:
                pass  # the thread or process has just ended
        index += 1
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """CPU of `pid` and its living descendants (a worker that ended takes its CPU along)."""
    total = 0.0
    for member in process_tree(pid):
        try:
            total += cpu_seconds(member)
        except OSError:
            pass
    return total


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def tree_rss_kib(pid: int) -> int:
    """RSS of `pid` and its living descendants (granian serves from a worker process)."""
    total = 0
    for member in process_tree(pid):
        try:
            total += rss_kib(member)
        except (OSError, RuntimeError):
            pass  # ended, or a zombie without memory
    return total


async def idle_cpu_seconds(pid: int | None, timeout_s: float = 5.0) -> float:
    """The server's CPU (with its worker processes) once it has gone idle (three equal
    reads 50 ms apart)."""
    if pid is None:
        return 0.0
    deadline = time.monotonic() + timeout_s
    last, same = tree_cpu_seconds(pid), 0
    while same < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        now = tree_cpu_seconds(pid)
        same = same + 1 if now == last else 0
        last = now
    return last


async def wait_ready(host: str, port: int, path: str, process: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            await get_json(host, port, path)
            return
        except (OSError, RuntimeError, asyncio.IncompleteReadError):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see bench/results/{name}.log") from None
            await asyncio.sleep(0.1)


# --- figures ----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Tally:
    """What one target gathered in one phase over all rounds."""

    outcomes: list[Outcome] = field(default_factory=list)
    cpu_s: float = 0.0
    wall_s: float = 0.0

    @property
    def ok(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.ok]

    @property
    def failed(self) -> int:
        return len(self.outcomes) - len(self.ok)

    def failures(self) -> dict[str, int]:
        reasons: dict[str, int] = {}
        for outcome in self.outcomes:
            if outcome.failure:
                reasons[outcome.failure] = reasons.get(outcome.failure, 0) + 1
        return reasons


# --- the phases -------------------------------------------------------------------------


#: Starts one more streamgate: (process name, extra environment, core or None) -> its target.
ServerStarter = Callable[[str, dict[str, str], str | None], Awaitable[tuple[Target, subprocess.Popen[bytes]]]]
OPEN_LOOP_TIMEOUT_S = 5.0
#: The longest an open-loop window waits for every server to go idle before it starts.
OPEN_LOOP_SETTLE_S = 30.0
OPEN_LOOP_MAX_ADDED_P99_MS = 10.0
SATURATION_CONCURRENCY = 64


class Bench:
    def __init__(self, plan: Plan, targets: list[Target], mock: tuple[str, int]) -> None:
        self.plan = plan
        self.targets = targets
        self.mock = mock
        self.tallies: dict[str, dict[str, Tally]] = {}
        self.memory: dict[str, dict[str, float | int | None]] = {}
        self.streamgate = next((t for t in targets if t.name == "streamgate"), None)
        self.own_phases = targets[0].provider == "openai" and self.streamgate is not None
        self.skipped: dict[str, str] = {}
        self.redis_cpu_s = 0.0
        self.resume_latency_ms: dict[str, list[float]] = {}
        self.stalls: dict[int, dict[str, object]] = {}  # rate -> streamgate's lag and GC pauses (`bench/stalls.py`)
        self.profile: dict[str, object] = {}

    def tally(self, phase: str, target: Target) -> Tally:
        return self.tallies.setdefault(phase, {}).setdefault(target.name, Tally())

    def rotations(self) -> Iterator[tuple[int, list[Target]]]:
        for round_index in range(self.plan.rounds):
            shift = round_index % len(self.targets)
            yield round_index, self.targets[shift:] + self.targets[:shift]

    async def measure(self, phase: str, target: Target, load: Callable[[], object], cpu: bool) -> None:
        tally = self.tally(phase, target)
        before = await idle_cpu_seconds(target.pid) if cpu else 0.0
        started = time.perf_counter()
        outcomes = await load()  # type: ignore[misc]
        tally.wall_s += time.perf_counter() - started
        tally.outcomes.extend(outcomes)
        if cpu:
            tally.cpu_s += await idle_cpu_seconds(target.pid) - before

    async def warm_up(self, target: Target) -> None:
        await run_streams(target, count=64, concurrency=16, tokens=8, delay_ms=0, timeout_s=30)
        await run_streams(target, count=2, concurrency=2, tokens=500, delay_ms=0, timeout_s=30)

    async def run_rounds(self) -> None:
        plan = self.plan
        for round_index, order in self.rotations():
            print(f"  round {round_index + 1}/{plan.rounds}", file=sys.stderr, flush=True)
            for concurrency, count in plan.ttft.items():
                for target in order:
                    await self.measure(
                        f"ttft_c{concurrency}",
                        target,
                        lambda t=target, c=concurrency, n=count: run_streams(
                            t, count=n, concurrency=c, tokens=16, delay_ms=5, timeout_s=30
                        ),
                        cpu=False,
                    )
            for target in order:
                await self.measure(
                    "single_stream",
                    target,
                    lambda t=target: run_streams(
                        t, count=1, concurrency=1, tokens=plan.single_tokens, delay_ms=0, timeout_s=120
                    ),
                    cpu=True,
                )
            for target in order:
                await self.measure(
                    "many_streams",
                    target,
                    lambda t=target: run_streams(
                        t,
                        count=plan.many_streams,
                        concurrency=plan.many_streams,
                        tokens=plan.many_tokens,
                        delay_ms=0,
                        timeout_s=180,
                    ),
                    cpu=True,
                )
            for target in order:
                await self.measure(
                    "short_requests",
                    target,
                    lambda t=target: run_streams(
                        t, count=plan.short_requests, concurrency=16, tokens=8, delay_ms=0, timeout_s=30
                    ),
                    cpu=True,
                )
            if self.own_phases:  # the same load as `many_streams`, each token a tool-call fragment
                await self.measure(
                    "tool_streams",
                    self.streamgate,
                    lambda t=self.streamgate: run_streams(
                        t,
                        count=plan.many_streams,
                        concurrency=plan.many_streams,
                        tokens=plan.many_tokens,
                        delay_ms=0,
                        timeout_s=180,
                        tool=True,
                    ),
                    cpu=True,
                )

    async def held_streams(self, target: Target) -> None:
        """Memory per open stream, then how fast the upstream is let go after a mass abort."""
        count = self.plan.held_streams
        await get_json(*self.mock, "/_bench/reset", method="POST")
        baseline = await self._settled_rss(target.pid)
        held = HeldStreams(target, tokens=10_000, delay_ms=500)
        opened = await held.open(count, concurrency=100, timeout_s=60)
        await asyncio.sleep(1.0)
        loaded = await self._settled_rss(target.pid)
        aborted_at = held.abort_all()
        await asyncio.sleep(1.5)
        stats = await get_json(*self.mock, "/_bench/stats")
        closed_in_1s = sum(1 for t in stats["aborted_at"] if t - aborted_at <= 1.0)  # type: ignore[index]
        self.memory[target.name] = {
            "streams": count,
            "open": opened,
            "failed": count - opened,
            "rss_baseline_kib": baseline,
            "rss_loaded_kib": loaded,
            "kib_per_stream": (loaded - baseline) / opened if opened and target.pid else None,
            "upstream_closed_within_1s": closed_in_1s,
            "upstream_still_open_after_1_5s": stats["open"],
        }
        await idle_cpu_seconds(target.pid)

    @staticmethod
    async def _settled_rss(pid: int | None) -> int:
        if pid is None:
            return 0
        await idle_cpu_seconds(pid)
        return tree_rss_kib(pid)

    async def open_loop(self) -> None:
        """Requests at fixed rates, stepped up; each server stops at its first failing rate
        (added p99 TTFT over the upstream at that rate above the bound, or a failed stream)."""
        upstream, stepping = self.targets[0], self.targets[1:]
        for target in self.targets:  # connections of both hops opened, then let go idle
            await run_open_loop(
                target, rate=OPEN_LOOP_RATES[0], duration_s=0.5, tokens=OPEN_LOOP_TOKENS, timeout_s=OPEN_LOOP_TIMEOUT_S
            )
        for rate in OPEN_LOOP_RATES:
            if not stepping:
                return
            print(f"  open loop: {rate} req/s", file=sys.stderr, flush=True)
            for target in [upstream, *stepping]:
                await self.all_idle()
                scraped = await self.scrape_metrics(target)
                outcomes = await run_open_loop(
                    target,
                    rate=rate,
                    duration_s=self.plan.open_loop_s,
                    tokens=OPEN_LOOP_TOKENS,
                    timeout_s=OPEN_LOOP_TIMEOUT_S,
                )
                self.tally(f"open_loop_r{rate}", target).outcomes.extend(outcomes)
                if scraped is not None:
                    self.record_stalls(rate, scraped, await self.scrape_metrics(target))
            stepping = [t for t in stepping if open_loop_holds(self.open_loop_p99(rate), t.name)]

    async def all_idle(self) -> None:
        """Every server idle, not only the next one measured: a server that failed a rate
        may still be working off the requests its client gave up on, on the core the next
        server's window is measured on (the tutorial's backlog at 250 req/s held streamgate's
        loop at 1,000 req/s: its p99 +16 ms in `--quick`, +1.1 ms without the tutorial)."""
        for target in self.targets:
            await idle_cpu_seconds(target.pid, timeout_s=OPEN_LOOP_SETTLE_S)

    async def scrape_metrics(self, target: Target) -> str | None:
        """streamgate's `/metrics` (the other targets have none); None when it does not answer."""
        if target is not self.streamgate:
            return None
        try:
            return await asyncio.wait_for(get_text(target.host, target.port, "/metrics"), 30)
        except (OSError, RuntimeError, TimeoutError, asyncio.IncompleteReadError) as exc:
            self.skipped["open_loop_stalls"] = f"GET /metrics failed: {exc!r}"
            return None

    def record_stalls(self, rate: int, before: str, after: str | None) -> None:
        if after is None:
            return
        found = stalls.summary(before, after)
        if found is None:
            self.skipped["open_loop_stalls"] = f"the server's /metrics has no {stalls.LAG}"
        else:
            self.stalls[rate] = found

    def stalls_by_rate(self) -> dict[int, dict[str, object]]:
        """Rate -> streamgate's p99 and p99.9 TTFT there beside its lag and GC pauses."""
        return {
            rate: {
                "ttft_p99_ms": self.open_loop_p99(rate)["streamgate"][0],
                "ttft_p999_ms": self.open_loop_p999(rate)["streamgate"],
                **found,
            }
            for rate, found in self.stalls.items()
        }

    async def profile_open_loop(self, out: Path) -> None:
        """One more pass of streamgate alone at the highest rate it ran (its figures not
        counted) under `py-spy record`: the collapsed stacks of its threads in `out`."""
        if shutil.which("py-spy") is None:
            self.skipped["open_loop_profile"] = "py-spy is not installed"
            return
        target = self.streamgate
        assert target is not None and target.pid is not None
        rate = max(r for r in OPEN_LOOP_RATES if self.tallies.get(f"open_loop_r{r}", {}).get(target.name))
        print(f"  open loop: {rate} req/s under py-spy", file=sys.stderr, flush=True)
        await idle_cpu_seconds(target.pid)
        with open(RESULTS / "py-spy.log", "wb") as log:
            spy = await asyncio.create_subprocess_exec(  # on this process's core, as the client
                *("py-spy", "record", "--pid", str(target.pid), "--format", "raw", "--nonblocking"),
                *("--rate", "200", "--output", str(out)),
                stdout=log,
                stderr=log,
            )
        try:
            # Its "Sampling" line comes only at its end when it writes to a file; an idle
            # server's samples are left out (no --idle), so starting early costs nothing.
            await asyncio.sleep(1.0)
            if spy.returncode is not None:
                raise RuntimeError("py-spy did not start; see bench/results/py-spy.log")
            await run_open_loop(
                target,
                rate=rate,
                duration_s=self.plan.open_loop_s,
                tokens=OPEN_LOOP_TOKENS,
                timeout_s=OPEN_LOOP_TIMEOUT_S,
            )
            spy.send_signal(signal.SIGINT)  # py-spy writes its file and exits
            await asyncio.wait_for(spy.wait(), 30)
        finally:
            if spy.returncode is None:
                spy.kill()
                await spy.wait()
        self.profile = {"rate": rate, "collapsed_stacks": str(out.relative_to(ROOT))}

    def open_loop_p999(self, rate: int) -> dict[str, float | None]:
        """Target name -> p99.9 TTFT in ms at `rate` (the tail a 1–3 s window hides)."""
        tallies = self.tallies.get(f"open_loop_r{rate}", {})
        return {name: percentile([o.ttft * 1e3 for o in tally.ok], 99.9) for name, tally in tallies.items()}

    def open_loop_p99(self, rate: int) -> dict[str, tuple[float | None, int]]:
        """Target name -> (p99 TTFT in ms, failed streams) at `rate`."""
        tallies = self.tallies.get(f"open_loop_r{rate}", {})
        return {
            name: (percentile([o.ttft * 1e3 for o in tally.ok], 99), tally.failed) for name, tally in tallies.items()
        }

    async def workers(self, start: ServerStarter, stop: Callable[[subprocess.Popen[bytes]], None]) -> None:
        """8-token requests at saturation (closed loop) on `WORKERS=1` and `WORKERS=2`, both
        unpinned: requests per second and CPU per request, every process of the server summed."""
        started = [await start(f"streamgate-workers{n}", {"WORKERS": str(n)}, None) for n in (1, 2)]
        try:
            two = started[1][0]
            if len(process_tree(two.pid)) < 3:  # type: ignore[arg-type]
                self.skipped["workers"] = "WORKERS=2 started no worker processes (this server has no WORKERS)"
                return
            for target, _ in started:
                await self.warm_up(target)
            for round_index in range(self.plan.rounds):
                for workers in (1, 2) if round_index % 2 == 0 else (2, 1):
                    await self.measure(
                        f"workers{workers}_saturation",
                        started[workers - 1][0],
                        lambda t=started[workers - 1][0]: run_streams(
                            t,
                            count=self.plan.saturation_requests,
                            concurrency=SATURATION_CONCURRENCY,
                            tokens=8,
                            delay_ms=0,
                            timeout_s=30,
                        ),
                        cpu=True,
                    )
        finally:
            for _, process in started:
                stop(process)

    async def resume(self, start: ServerStarter, processes: Processes) -> None:
        """CPU per content frame, plain vs resumable in-process vs resumable in Redis (the
        `many_streams` load), Redis's own CPU, and resume request -> first replayed frame."""
        try:
            from bench import resume
        except ImportError:
            self.skipped["resume"] = "bench/resume.py is absent (no resumable streams on this branch)"
            return
        plain = self.streamgate
        assert plain is not None
        try:
            await asyncio.wait_for(resume.a_finished_stream(plain.port, 200), 30)
        except (TimeoutError, RuntimeError, StopIteration, OSError):
            self.skipped["resume"] = "the server answers `resumable: true` without an X-Stream-Id"
            return
        cases = {"resume_plain": plain, "resume_in_process": replace(plain, dialect=resume.RESUMABLE)}
        redis = await self.start_redis(processes)
        if redis is not None:
            redis_process, redis_url = redis
            in_redis, _ = await start("streamgate-redis", {"REDIS_URL": redis_url}, SERVER_CORE)
            cases["resume_redis"] = replace(in_redis, dialect=resume.RESUMABLE)
            await self.warm_up(cases["resume_redis"])
        for _ in range(self.plan.rounds):
            for phase, target in cases.items():
                redis_before = tree_cpu_seconds(redis_process.pid) if redis is not None else 0.0
                await self.measure(
                    phase,
                    target,
                    lambda t=target: run_streams(
                        t,
                        count=self.plan.many_streams,
                        concurrency=self.plan.many_streams,
                        tokens=self.plan.many_tokens,
                        delay_ms=0,
                        timeout_s=180,
                    ),
                    cpu=True,
                )
                if phase == "resume_redis":
                    self.redis_cpu_s += tree_cpu_seconds(redis_process.pid) - redis_before
        for phase, target in cases.items():
            if phase != "resume_plain":
                self.resume_latency_ms[phase] = await self.resume_latencies(resume, target.port)

    async def resume_latencies(self, resume: ModuleType, port: int) -> list[float]:
        """Milliseconds from a resume request (after frame 100 of a finished 200-frame stream)
        to its first replayed frame, one keep-alive connection."""
        stream_id = await asyncio.wait_for(resume.a_finished_stream(port, 200), 30)
        latencies = await asyncio.wait_for(resume.resume_latency(port, stream_id, 100, self.plan.resumes), 60)
        return [latency * 1e3 for latency in latencies]

    async def start_redis(self, processes: Processes) -> tuple[subprocess.Popen[bytes], str] | None:
        """A `redis-server` of this run's own on a free loopback port, answering PING, and
        its URL; None when none is installed. Stopped with every other process."""
        if shutil.which("redis-server") is None:
            self.skipped["resume_redis"] = "redis-server is not installed"
            return None
        port = free_port()
        process = processes.start(
            "redis",
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            {},
            CLIENT_CORE,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"PING\r\n")
                answer = await reader.readline()
                writer.close()
                if answer == b"+PONG\r\n":
                    return process, f"redis://127.0.0.1:{port}/0"
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start; see bench/results/redis.log")
            await asyncio.sleep(0.1)


def open_loop_holds(p99: dict[str, tuple[float | None, int]], name: str) -> bool:
    """Whether `name` sustained a rate: no failed stream, added p99 TTFT within the bound."""
    ours, failed = p99.get(name, (None, 1))
    upstream = p99.get("upstream", (None, 0))[0]
    if failed or ours is None or upstream is None:
        return False
    return ours - upstream <= OPEN_LOOP_MAX_ADDED_P99_MS


# --- the report ---------------------------------------------------------------------------


def summarize(bench: Bench) -> dict[str, dict[str, float | int | None]]:
    """Figure name -> target name -> value."""
    figures: dict[str, dict[str, float | int | None]] = {}

    def put(name: str, target: str, value: float | None) -> None:
        figures.setdefault(name, {})[target] = value

    for target in bench.targets:
        name = target.name
        for concurrency in bench.plan.ttft:
            ttfts = [o.ttft * 1e3 for o in bench.tally(f"ttft_c{concurrency}", target).ok]
            for q in (50, 90, 99):
                put(f"ttft_c{concurrency}_p{q}_ms", name, percentile(ttfts, q))
        single = bench.tally("single_stream", target).ok
        rates = [o.frames / (o.ended_at - o.started_at) for o in single]
        put("single_stream_frames_per_s", name, percentile(rates, 50))
        many = bench.tally("many_streams", target)
        many_frames = sum(o.frames for o in many.ok)
        put("many_streams_frames_per_s", name, many_frames / many.wall_s if many.wall_s else None)
        short = bench.tally("short_requests", target)
        if target.pid is not None:
            put("cpu_us_per_frame", name, many.cpu_s / many_frames * 1e6 if many_frames else None)
            put("cpu_ms_per_short_request", name, short.cpu_s / len(short.ok) * 1e3 if short.ok else None)
        memory = bench.memory.get(name, {})
        if memory:
            put("kib_per_open_stream", name, memory["kib_per_stream"])
            put("upstream_closed_within_1s", name, memory["upstream_closed_within_1s"])
        failed = sum(
            t.failed
            for phase, tallies in bench.tallies.items()
            if not phase.startswith("open_loop")
            for n, t in tallies.items()
            if n == name
        )
        put("failed_streams", name, failed + (int(memory.get("failed") or 0)))
    for name in SERVERS:
        if name in figures["ttft_c1_p50_ms"] and figures["ttft_c1_p50_ms"].get("upstream") is not None:
            value = figures["ttft_c1_p50_ms"][name]
            put("added_ttft_c1_p50_ms", name, None if value is None else value - figures["ttft_c1_p50_ms"]["upstream"])  # type: ignore[operator]
    if bench.own_phases:
        summarize_own(bench, put)
    return figures


def per(numerator: float, denominator: float, scale: float = 1.0) -> float | None:
    return numerator / denominator * scale if denominator else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def added(value: float | None, baseline: float | None) -> float | None:
    return value - baseline if value is not None and baseline is not None else None


def summarize_own(bench: Bench, put: Callable[[str, str, float | int | None], None]) -> None:
    """The figures of streamgate's own phases (openai path)."""
    sg = "streamgate"
    text, tools = bench.tally("many_streams", bench.streamgate), bench.tally("tool_streams", bench.streamgate)
    tool_frame = per(tools.cpu_s, sum(o.frames for o in tools.ok), 1e6)
    put("cpu_us_per_tool_call_frame", sg, tool_frame)
    put("tool_call_frame_cpu_ratio", sg, ratio(tool_frame, per(text.cpu_s, sum(o.frames for o in text.ok), 1e6)))
    held: dict[str, int] = {}
    for rate in OPEN_LOOP_RATES:
        p99 = bench.open_loop_p99(rate)
        upstream = p99.get("upstream", (None, 0))[0]
        for name, (value, failed) in p99.items():
            put(f"open_loop_{rate}_p99_ms", name, value)
            if name != "upstream":
                put(f"open_loop_{rate}_added_p99_ms", name, added(value, upstream))
            put(f"open_loop_{rate}_failed", name, failed)
            if name != "upstream" and open_loop_holds(p99, name):
                held[name] = rate
    for target in bench.targets[1:]:
        put("open_loop_max_rate_per_s", target.name, held.get(target.name, 0))
    at_1000 = bench.open_loop_p99(1000)
    for name, (value, _) in at_1000.items():
        if name != "upstream":
            put("open_loop_1000_added_p99_ms", name, added(value, at_1000["upstream"][0]))
    tail_1000 = bench.open_loop_p999(1000)
    for name, value in tail_1000.items():
        put("open_loop_1000_p999_ms", name, value)
        if name != "upstream":
            put("open_loop_1000_added_p999_ms", name, added(value, tail_1000.get("upstream")))
    if "workers" not in bench.skipped and "workers1_saturation" in bench.tallies:
        rates, cpu = {}, {}
        for workers in (1, 2):
            tally = bench.tally(f"workers{workers}_saturation", bench.streamgate)
            rates[workers] = per(len(tally.ok), tally.wall_s)
            cpu[workers] = per(tally.cpu_s, len(tally.ok), 1e3)
            put(f"workers{workers}_requests_per_s", sg, rates[workers])
            put(f"workers{workers}_cpu_ms_per_request", sg, cpu[workers])
        put("workers2_cpu_per_request_ratio", sg, ratio(cpu[2], cpu[1]))
        put("workers2_requests_per_s_ratio", sg, ratio(rates[2], rates[1]))
    if "resume_plain" in bench.tallies:
        cpu_per_frame = {}
        for phase in ("resume_plain", "resume_in_process", "resume_redis"):
            if phase in bench.tallies:
                tally = bench.tally(phase, bench.streamgate)
                frames = sum(o.frames for o in tally.ok)
                cpu_per_frame[phase] = per(tally.cpu_s, frames, 1e6)
                put(f"{phase}_cpu_us_per_frame", sg, cpu_per_frame[phase])
                if phase == "resume_redis":
                    put("redis_own_cpu_us_per_frame", sg, per(bench.redis_cpu_s, frames, 1e6))
        for store in ("in_process", "redis"):
            if f"resume_{store}" in cpu_per_frame:
                put(
                    f"resume_{store}_cpu_ratio",
                    sg,
                    ratio(cpu_per_frame[f"resume_{store}"], cpu_per_frame["resume_plain"]),
                )
            latencies = bench.resume_latency_ms.get(f"resume_{store}", [])
            if latencies:
                put(f"resume_{store}_first_frame_p50_ms", sg, percentile(latencies, 50))
                put(f"resume_{store}_first_frame_p99_ms", sg, percentile(latencies, 99))


# figure -> its bounds, all of which must hold: (kind, bound), a kind being a ratio to the
# tutorial's value ("ratio<=", "ratio>="), to the upstream's ("upstream<="), an absolute
# bound ("<=", ">=", "=="), or "all" (every one of the held streams). Issue 26's targets.
TARGETS: dict[str, tuple[tuple[str, float], ...]] = {
    "cpu_us_per_frame": (("ratio<=", 1 / 10),),
    "cpu_ms_per_short_request": (("ratio<=", 0.07),),
    "added_ttft_c1_p50_ms": (("ratio<=", 1 / 4), ("<=", 0.6)),
    "ttft_c128_p50_ms": (("upstream<=", 6),),
    "single_stream_frames_per_s": (("ratio>=", 20),),
    "kib_per_open_stream": (("<=", 20),),
    "upstream_closed_within_1s": (("all", 0),),
    "failed_streams": (("==", 0),),
    "tool_call_frame_cpu_ratio": (("<=", 1.1),),
    "open_loop_max_rate_per_s": ((">=", 2000),),
    "open_loop_1000_added_p99_ms": (("<=", 2),),
    "open_loop_1000_added_p999_ms": (("<=", 10),),
    "workers2_cpu_per_request_ratio": (("<=", 1.1),),
    "workers2_requests_per_s_ratio": ((">=", 1.3),),
    "resume_in_process_cpu_ratio": (("<=", 1.3),),
    "resume_redis_cpu_ratio": (("<=", 2),),
    "resume_in_process_first_frame_p50_ms": (("<=", 2),),
    "resume_in_process_first_frame_p99_ms": (("<=", 10),),
    "resume_redis_first_frame_p50_ms": (("<=", 2),),
    "resume_redis_first_frame_p99_ms": (("<=", 10),),
}


def verdict(figure: str, values: dict[str, float | int | None], held: int) -> tuple[str, str]:
    """(the target in words, "yes"/"NO"/"") for streamgate's value of `figure`: "" when a
    value it is judged by is missing."""
    bounds = TARGETS.get(figure)
    if bounds is None:
        return "", ""
    words = " and ".join(_target_words(kind, bound, held) for kind, bound in bounds)
    results = [_met(kind, bound, values, held) for kind, bound in bounds]
    if None in results:
        return words, ""
    return words, "yes" if all(results) else "NO"


def _met(kind: str, bound: float, values: dict[str, float | int | None], held: int) -> bool | None:
    ours = values.get("streamgate")
    if ours is None:
        return None
    if kind.startswith(("ratio", "upstream")):
        theirs = values.get("upstream" if kind.startswith("upstream") else "tutorial")
        if not theirs:
            return None
        ratio = ours / theirs
        return ratio >= bound if kind.endswith(">=") else ratio <= bound
    if kind == "<=":
        return ours <= bound
    if kind == ">=":
        return ours >= bound
    if kind == "all":
        return ours == held
    return ours == bound


def _target_words(kind: str, bound: float, held: int) -> str:
    if kind == "ratio<=":
        return f"<= 1/{round(1 / bound)} tut" if (1 / bound).is_integer() else f"<= {bound:g} tut"
    if kind == "ratio>=":
        return f">= {bound:g}x tut"
    if kind == "upstream<=":
        return f"<= {bound:g}x up"
    if kind == "all":
        return f"{held} of {held}"
    return f"{kind} {bound:g}"


def table(figures: dict[str, dict[str, float | int | None]], held: int, judged: bool) -> str:
    """The figures side by side, with ratios; `judged` adds the issue's targets (openai path)."""
    measured = {name for values in figures.values() for name in values}
    names = ["upstream", *(name for name in SERVERS if name in measured)]
    ratios = {
        column: pair
        for column, pair in RATIOS.items()
        if set(pair) <= measured  # both servers of the ratio ran
    }
    header = ["figure", *names, *ratios, "target", "met"]
    rows = [header]
    for figure, values in figures.items():
        target, met = verdict(figure, values, held) if judged else ("", "")
        rows.append(
            [
                figure,
                *(_fmt(values.get(n)) for n in names),
                *(_ratio(values.get(a), values.get(b)) for a, b in ratios.values()),
                target,
                met,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))) for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0 or isinstance(a, int) and isinstance(b, int):
        return ""
    return f"{a / b:.3f}" if a / b < 10 else f"{a / b:.1f}"


# --- the run ------------------------------------------------------------------------------


def provider_env(mock_port: int) -> dict[str, str]:
    mock = f"http://127.0.0.1:{mock_port}"
    return {
        "OPENAI_BASE_URL": f"{mock}/v1",
        "OPENAI_API_KEY": "bench",
        "TOGETHER_BASE_URL": f"{mock}/v1",
        "TOGETHER_API_KEY": "bench",
        "ANTHROPIC_BASE_URL": mock,
        "ANTHROPIC_API_KEY": "bench",
        "GEMINI_BASE_URL": mock,
        "GEMINI_API_KEY": "bench",
        "UPSTREAM_MAX_RETRIES": "0",
        "SHUTDOWN_GRACE_S": "1",
        "PYTHONUNBUFFERED": "1",
    }


async def bench_provider(
    provider: str, plan: Plan, processes: Processes, only: list[str], profile_to: Path | None = None
) -> dict[str, object]:
    host = "127.0.0.1"
    mock_process = processes.start("mock", [sys.executable, "-m", "bench.mock_upstream"], {}, CLIENT_CORE)
    mock_port = int(mock_process.stdout.readline().split()[1])  # type: ignore[union-attr]
    env = provider_env(mock_port)
    targets = [Target("upstream", host, mock_port, DIALECTS[provider], provider)]
    servers = {
        "streamgate": ([sys.executable, "server.py"], "/api/v1/chat/stream/health"),
        "tutorial": (
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.tutorial_app:app",
                "--host",
                host,
                "--port",
                "{port}",
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            "/health",
        ),
        # The same app under granian instead of uvicorn (not adopted: docs/BENCHMARKS.md).
        "streamgate-granian": ([sys.executable, "-m", "bench.granian_server"], "/api/v1/chat/stream/health"),
    }

    async def start(
        name: str, extra_env: dict[str, str], core: str | None, server: str = "streamgate"
    ) -> tuple[Target, subprocess.Popen[bytes]]:
        argv, health = servers[server]
        port = free_port()
        process = processes.start(
            name,
            [a.replace("{port}", str(port)) for a in argv],
            {**env, "HOST": host, "PORT": str(port), **extra_env},
            core,
        )
        await wait_ready(host, port, health, process, name)
        return Target(server, host, port, DIALECTS["native"], provider, process.pid), process

    for name in servers:
        if name in only:
            targets.append((await start(name, {}, SERVER_CORE, name))[0])
    bench = Bench(plan, targets, (host, mock_port))
    for target in targets:
        print(f"  {target.name}: warm-up, {plan.held_streams} held streams", file=sys.stderr, flush=True)
        await bench.warm_up(target)
        await bench.held_streams(target)
    await bench.run_rounds()
    if bench.own_phases:
        await bench.open_loop()
        if profile_to is not None:
            await bench.profile_open_loop(profile_to)
        print("  workers", file=sys.stderr, flush=True)
        await bench.workers(start, processes.stop)
        print("  resume", file=sys.stderr, flush=True)
        await bench.resume(start, processes)
    figures = summarize(bench)
    failures = {
        phase: {name: tally.failures() for name, tally in tallies.items() if tally.failed}
        for phase, tallies in bench.tallies.items()
    }
    samples = {
        phase: {name: len(tally.ok) for name, tally in tallies.items()} for phase, tallies in bench.tallies.items()
    }
    result: dict[str, object] = {
        "figures": figures,
        "samples": samples,
        "memory": bench.memory,
        "failures": {k: v for k, v in failures.items() if v},
        "skipped": bench.skipped,
        "table": table(figures, plan.held_streams, judged=provider == "openai"),
    }
    if bench.stalls:
        result["open_loop_stalls"] = bench.stalls_by_rate()
        result["stalls_table"] = stalls.table(bench.stalls_by_rate())
    if bench.profile:
        result["open_loop_profile"] = bench.profile
    return result


def machine() -> dict[str, object]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    import anthropic
    import google.genai
    import openai

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openai": openai.__version__,
        "anthropic": anthropic.__version__,
        "google-genai": google.genai.__version__,
    }


async def main_async(args: argparse.Namespace, stamp: str) -> dict[str, object]:
    plan = QUICK if args.quick else FULL
    processes = Processes()
    results: dict[str, object] = {}
    try:
        for provider in args.provider.split(","):
            print(f"{provider}:", file=sys.stderr, flush=True)
            profile_to = RESULTS / f"{stamp}-{provider}-open-loop.collapsed" if args.profile_open_loop else None
            results[provider] = await bench_provider(provider, plan, processes, args.targets.split(","), profile_to)
            processes.stop_all()
    finally:
        processes.stop_all()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description="streamgate vs upstream vs tutorial")
    parser.add_argument("--quick", action="store_true", help="a smaller run, about three minutes")
    parser.add_argument("--provider", default="openai", help="comma-separated: openai,anthropic,gemini")
    parser.add_argument(
        "--targets",
        default="streamgate,tutorial",
        help=f"servers to measure besides the upstream, of: {', '.join(SERVERS)} (streamgate-granian: "
        "the same app under granian; pip install granian)",
    )
    parser.add_argument(
        "--profile-open-loop",
        action="store_true",
        help="py-spy on streamgate in one more pass at its highest open-loop rate: bench/results/<time>-*.collapsed",
    )
    args = parser.parse_args(argv)
    unknown = set(args.targets.split(",")) - set(SERVERS)
    if unknown:
        parser.error(f"--targets: no server named {', '.join(sorted(unknown))}; the servers: {', '.join(SERVERS)}")
    if "streamgate-granian" in args.targets.split(",") and importlib.util.find_spec("granian") is None:
        parser.error("--targets streamgate-granian: granian is not installed (pip install granian)")
    raise_open_files_limit()
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    started = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    with asyncio.Runner(loop_factory=new_event_loop()) as runner:
        results = runner.run(main_async(args, stamp))
    report = {
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": machine(),
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stamp}.json"
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    for provider, result in results.items():
        print(f"\n{provider} — {report['command']} — {report['date']} — {report['machine']['cpu']}")  # type: ignore[index]
        print(result["table"])  # type: ignore[index]
        if "stalls_table" in result:  # type: ignore[operator]
            print("\n" + result["stalls_table"])  # type: ignore[index]
        if "open_loop_profile" in result:  # type: ignore[operator]
            print("profile:", json.dumps(result["open_loop_profile"]))  # type: ignore[index]
        if result["failures"]:  # type: ignore[index]
            print("failures:", json.dumps(result["failures"], ensure_ascii=False))  # type: ignore[index]
        for phase, reason in result["skipped"].items():  # type: ignore[index]
            print(f"skipped {phase}: {reason}")
    print(f"\nfigures: {path.relative_to(ROOT)}  ({report['duration_s']} s)")
