"""What callers cost: the gateway's CPU per 8-token stream with no callers, with a caller
that has all three limits (counts in the process), and the same with counts in Redis.

    python -m bench.callers [--requests 2000] [--rounds 3]

The gateway runs pinned to core 0, the mock upstream, this client and `redis-server` to
core 1; the three setups take turns in each round, so drift hits them alike. Redis's own
CPU is reported apart. The bench client sends `Authorization: Bearer bench`: the caller's
key is `bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.client import DIALECTS, Target, run_streams
from bench.mock_upstream import new_event_loop
from bench.run import (
    CLIENT_CORE,
    SERVER_CORE,
    Processes,
    free_port,
    idle_cpu_seconds,
    provider_env,
    raise_open_files_limit,
    tree_cpu_seconds,
)

CALLER = f"""[[callers]]
name = "bench"
key_sha256 = "{hashlib.sha256(b"bench").hexdigest()}"
models = ["openai/*"]
max_streams = 10000
requests_per_minute = 1000000000
tokens_per_minute = 1000000000000
"""
TOKENS = 8
CONCURRENCY = 16


def start_redis(processes: Processes) -> tuple[subprocess.Popen[bytes], str]:
    """A `redis-server` of this run on a free loopback port (stopped with the others)."""
    import redis

    port = free_port()
    process = processes.start(
        "redis",
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        {},
        CLIENT_CORE,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url).ping()
            return process, url
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("redis-server did not start (is it installed?)") from None
            time.sleep(0.05)


async def until_answering(url: str, process: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(headers={"authorization": "Bearer bench"}) as client:
        while True:
            try:
                (await client.get(url, timeout=1)).raise_for_status()
                return
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the gateway at {url} did not start; see bench/results/") from None
                await asyncio.sleep(0.1)


async def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    processes = Processes()
    host = "127.0.0.1"
    config = Path(tempfile.mkdtemp(prefix="streamgate-callers-")) / "streamgate.toml"
    config.write_text(CALLER)
    empty = config.with_name("empty.toml")
    empty.write_text("")
    per_request: dict[str, list[float]] = {"no callers": [], "caller, in-process": [], "caller, Redis": []}
    redis_cpu: list[float] = []
    try:
        mock = processes.start("mock", [sys.executable, "-m", "bench.mock_upstream"], {}, CLIENT_CORE)
        mock_port = int(mock.stdout.readline().split()[1])  # type: ignore[union-attr]
        redis_process, redis_url = start_redis(processes)
        setups = {
            "no callers": {"STREAMGATE_CONFIG": str(empty)},
            "caller, in-process": {"STREAMGATE_CONFIG": str(config)},
            "caller, Redis": {"STREAMGATE_CONFIG": str(config), "REDIS_URL": redis_url},
        }
        targets: dict[str, Target] = {}
        for name, env in setups.items():
            port = free_port()
            process = processes.start(
                name.replace(" ", "").replace(",", "-"),
                [sys.executable, "server.py"],
                {**provider_env(mock_port), "HOST": host, "PORT": str(port), **env},
                SERVER_CORE,
            )
            await until_answering(f"http://{host}:{port}/api/v1/chat/stream/health", process)
            targets[name] = Target(name, host, port, DIALECTS["native"], "openai", process.pid)
            await run_streams(
                targets[name], count=200, concurrency=CONCURRENCY, tokens=TOKENS, delay_ms=0, timeout_s=30
            )  # warm-up
        for round_number in range(args.rounds):
            order = list(targets)[round_number % 3 :] + list(targets)[: round_number % 3]
            for name in order:
                target = targets[name]
                before = await idle_cpu_seconds(target.pid)
                redis_before = tree_cpu_seconds(redis_process.pid)
                outcomes = await run_streams(
                    target, count=args.requests, concurrency=CONCURRENCY, tokens=TOKENS, delay_ms=0, timeout_s=30
                )
                failed = [o.failure for o in outcomes if not o.ok]
                if failed:
                    raise SystemExit(f"{name}: {len(failed)} requests failed, e.g. {failed[0]}")
                per_request[name].append((await idle_cpu_seconds(target.pid) - before) / len(outcomes) * 1e6)
                if name == "caller, Redis":
                    redis_cpu.append((tree_cpu_seconds(redis_process.pid) - redis_before) / len(outcomes) * 1e6)
        per_request["redis-server's own"] = redis_cpu
        return per_request
    finally:
        processes.stop_all()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.callers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="8-token streams per setup and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    raise_open_files_limit()
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    with asyncio.Runner(loop_factory=new_event_loop()) as runner:
        results = runner.run(measure(args))
    base = results["no callers"]
    print(
        f"CPU per {TOKENS}-token stream, µs (median of {args.rounds} rounds of {args.requests}); the ratio is the "
        "median of each round's ratio to the no-callers setup measured in the same round:"
    )
    for name, values in results.items():
        ratios = [value / baseline for value, baseline in zip(values, base, strict=True)]
        ratio = "" if name == "redis-server's own" else f"  {median(ratios):.3f}×"
        print(f"  {name:22} {median(values):8.1f}{ratio}   rounds: {', '.join(f'{v:.0f}' for v in values)}")


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


if __name__ == "__main__":
    main()
