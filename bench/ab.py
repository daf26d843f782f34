"""CPU per 8-token request and per content frame, and added TTFT at c=1, for variants of
the server measured in one run: another checkout, another Python, other settings.

    python -m bench.ab --variant main PYTHONPATH=/tmp/base --variant new \\
        [--variant py312 PYTHON=/path/to/python3.12] [--rounds 5] [--requests 800]

A variant is a name and `NAME=VALUE` settings for its process's environment; `PYTHON=`
chooses its interpreter, `PYTHONPATH=` a directory holding another checkout as
`streamgate/`. Like `python -m bench`: the servers pinned to core 0, the mock upstream and
this client to core 1, every variant measured in each round in rotating order; the figures
that matter are each round's ratios to the first variant (their median is printed). Every
process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from bench.client import DIALECTS, Target, run_streams
from bench.run import (
    CLIENT_CORE,
    SERVER_CORE,
    Processes,
    free_port,
    idle_cpu_seconds,
    percentile,
    provider_env,
    wait_ready,
)

HOST = "127.0.0.1"
T = TypeVar("T")
#: A round's figures for one variant: ms of CPU per request, µs per frame, added TTFT p50 ms.
Figures = tuple[float, float, float]


@dataclass
class Variant:
    name: str
    env: dict[str, str]

    @classmethod
    def parse(cls, words: list[str]) -> Variant:
        name, *settings = words
        return cls(name, dict(setting.split("=", 1) for setting in settings))


async def start(variant: Variant, env: dict[str, str], processes: Processes) -> Target:
    port = free_port()
    settings = dict(variant.env)
    python = settings.pop("PYTHON", sys.executable)
    process = processes.start(
        variant.name, [python, "server.py"], {**env, "HOST": HOST, "PORT": str(port), **settings}, SERVER_CORE
    )
    await wait_ready(HOST, port, "/api/v1/chat/stream/health", process, variant.name)
    return Target(variant.name, HOST, port, DIALECTS["native"], "openai", process.pid)


async def one_round(target: Target, upstream: Target, args: argparse.Namespace) -> Figures:
    pid = target.pid
    assert pid is not None
    before = await idle_cpu_seconds(pid)
    outcomes = await run_streams(target, count=args.requests, concurrency=16, tokens=8, delay_ms=0, timeout_s=60)
    request_ms = (await idle_cpu_seconds(pid) - before) / sum(o.ok for o in outcomes) * 1e3
    before = await idle_cpu_seconds(pid)
    outcomes = await run_streams(
        target, count=args.streams, concurrency=args.streams, tokens=args.tokens, delay_ms=0, timeout_s=180
    )
    frame_us = (await idle_cpu_seconds(pid) - before) / sum(o.frames for o in outcomes if o.ok) * 1e6
    ttft = await c1_ttft_ms(target, args.c1)
    return request_ms, frame_us, ttft - await c1_ttft_ms(upstream, args.c1)


async def c1_ttft_ms(target: Target, count: int) -> float:
    outcomes = await run_streams(target, count=count, concurrency=1, tokens=8, delay_ms=0, timeout_s=10)
    median = percentile([o.ttft * 1e3 for o in outcomes if o.ok], 50)
    assert median is not None, f"{target.name}: no stream succeeded"
    return median


async def measure(args: argparse.Namespace, processes: Processes) -> list[dict[str, Figures]]:
    mock = processes.start("mock", [sys.executable, "-m", "bench.mock_upstream"], {}, CLIENT_CORE)
    mock_port = int(mock.stdout.readline().split()[1])  # type: ignore[union-attr]
    env = {**provider_env(mock_port), **dict(args.env)}
    upstream = Target("upstream", HOST, mock_port, DIALECTS["openai"], "openai")
    targets = [await start(variant, env, processes) for variant in args.variant]
    for target in targets:  # warm-up
        await run_streams(target, count=300, concurrency=16, tokens=8, delay_ms=0, timeout_s=30)
        await run_streams(target, count=4, concurrency=4, tokens=500, delay_ms=0, timeout_s=30)
    rounds: list[dict[str, Figures]] = []
    for index in range(args.rounds):
        print(f"  round {index + 1}/{args.rounds}", file=sys.stderr, flush=True)
        shift = index % len(targets)
        rounds.append({t.name: await one_round(t, upstream, args) for t in targets[shift:] + targets[:shift]})
    return rounds


def report(rounds: list[dict[str, Figures]]) -> str:
    names = list(rounds[0])
    first = names[0]
    lines = [
        f"{'variant':12} {'CPU ms / request':>17} {'CPU µs / frame':>15} {'added TTFT c=1 ms':>18}"
        f"   ratios to {first} (median of each round's ratio)"
    ]
    for name in names:
        medians = [statistics.median(figures[name][i] for figures in rounds) for i in range(3)]
        ratios = [statistics.median(figures[name][i] / figures[first][i] for figures in rounds) for i in range(2)]
        lines.append(
            f"{name:12} {medians[0]:17.3f} {medians[1]:15.2f} {medians[2]:18.2f}"
            f"   request {ratios[0]:.3f}x, frame {ratios[1]:.3f}x"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.splitlines()[0])
    parser.add_argument("--variant", nargs="+", action="append", type=str, required=True, metavar="NAME [K=V]")
    load_options(parser)
    parser.add_argument("--c1", type=int, default=60, help="streams one at a time for the TTFT, per round")
    parser.add_argument("--env", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"), help="for all")
    args = parser.parse_args()
    args.variant = [Variant.parse(words) for words in args.variant]
    print(report(run(measure, args)))


def load_options(parser: argparse.ArgumentParser) -> None:
    """The rounds and the load of each (shared with `bench.otel`)."""
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=800, help="8-token requests per server and round")
    parser.add_argument("--streams", type=int, default=32, help="concurrent long streams per server and round")
    parser.add_argument("--tokens", type=int, default=1000, help="tokens per long stream")


def run(measure: Callable[[argparse.Namespace, Processes], Coroutine[Any, Any, T]], args: argparse.Namespace) -> T:
    """`measure` from this client's core; every process it started stopped by its PID."""
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    processes = Processes()
    try:
        return asyncio.run(measure(args, processes))
    finally:
        processes.stop_all()


if __name__ == "__main__":
    main()
