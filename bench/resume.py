"""What a resumable stream costs: `python -m bench.resume` (about a minute).

Starts the mock upstream, a `redis-server` and two streamgate servers (one without
`REDIS_URL`, one with it), all on 127.0.0.1, and measures on the openai path:

- server CPU per content frame, plain vs `"resumable": true` in-process vs in Redis:
  64 streams of 2,000 tokens sent at once (frames batch up), and 64 streams of 300
  tokens 2 ms apart (about one frame per `send`, so one store append per frame);
- resume latency: `GET /api/v1/chat/stream/{id}` with `Last-Event-ID` on a finished
  stream, from the request written to the first replayed frame read, p50 / p99.

Prints a table; every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time

import msgspec

from bench.client import DIALECTS, Dialect, Target, read_native, run_streams
from bench.run import (
    CLIENT_CORE,
    ROOT,
    SERVER_CORE,
    free_port,
    idle_cpu_seconds,
    provider_env,
    wait_ready,
)

_MESSAGES = [{"role": "user", "content": "Say the bench text."}]
RESUMABLE = Dialect(
    "native",
    lambda model: "/api/v1/chat/stream",
    lambda model, provider: msgspec.json.encode(
        {"provider": provider, "model": model, "messages": _MESSAGES, "resumable": True}
    ),
    read_native,
    True,
)


def start(argv: list[str], env: dict[str, str], core: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["taskset", "-c", core, *argv],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


async def cpu_per_frame(target: Target, streams: int, tokens: int, delay_ms: float) -> float:
    before = await idle_cpu_seconds(target.pid)
    outcomes = await run_streams(
        target, count=streams, concurrency=streams, tokens=tokens, delay_ms=delay_ms, timeout_s=120
    )
    after = await idle_cpu_seconds(target.pid)
    failed = [o.failure for o in outcomes if o.failure]
    assert not failed, failed[:3]
    return (after - before) / sum(o.frames for o in outcomes)


async def resume_latency(port: int, stream_id: str, after: int, count: int) -> list[float]:
    """Seconds from a resume request written to its first frame read, one keep-alive connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        f"GET /api/v1/chat/stream/{stream_id} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nlast-event-id: {after}\r\n\r\n"
    ).encode()
    first_frame = b"id: %d\n" % (after + 1)
    latencies = []
    for _ in range(count):
        received = b""
        started = time.perf_counter()
        writer.write(request)
        while first_frame not in received:
            received += await reader.read(65536)
        latencies.append(time.perf_counter() - started)
        while not received.endswith(b"\r\n0\r\n\r\n"):
            received += await reader.read(65536)
    writer.close()
    return latencies


async def a_finished_stream(port: int, tokens: int) -> str:
    """The id of a resumable stream of `tokens` frames, read to its end."""
    body = msgspec.json.encode(
        {"provider": "openai", "model": f"bench-{tokens}-0", "messages": _MESSAGES, "resumable": True}
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST /api/v1/chat/stream HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        + body
    )
    received = await reader.read()
    writer.close()
    head = received.split(b"\r\n\r\n", 1)[0].decode()
    return next(line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("x-stream-id"))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def main(rounds: int) -> None:
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed")
    started: list[subprocess.Popen[bytes]] = []
    try:
        mock = start([sys.executable, "-m", "bench.mock_upstream"], {}, CLIENT_CORE)
        started.append(mock)
        mock_port = int(mock.stdout.readline().split()[1])  # type: ignore[union-attr]
        redis_port = free_port()
        started.append(
            start(
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                {},
                CLIENT_CORE,
            )
        )
        env = {**provider_env(mock_port), "HOST": "127.0.0.1"}
        targets: dict[str, tuple[Target, Target]] = {}
        for name, extra in (("in-process", {}), ("redis", {"REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"})):
            port = free_port()
            server = start([sys.executable, "server.py"], {**env, **extra, "PORT": str(port)}, SERVER_CORE)
            started.append(server)
            await wait_ready("127.0.0.1", port, "/api/v1/chat/stream/health", server, name)
            targets[name] = (
                Target(name, "127.0.0.1", port, DIALECTS["native"], "openai", server.pid),
                Target(name, "127.0.0.1", port, RESUMABLE, "openai", server.pid),
            )
        loads = {"burst 64x2000": (64, 2000, 0.0), "paced 64x300 2ms": (64, 300, 2.0)}
        cpu: dict[tuple[str, str], list[float]] = {}
        for target in [t for pair in targets.values() for t in pair]:
            await cpu_per_frame(target, 16, 200, 0)  # warm-up
        for _ in range(rounds):
            for load, (streams, tokens, delay_ms) in loads.items():
                cases = [
                    ("plain", targets["in-process"][0]),
                    ("in-process", targets["in-process"][1]),
                    ("redis", targets["redis"][1]),
                ]
                for case, target in cases:
                    cpu.setdefault((load, case), []).append(await cpu_per_frame(target, streams, tokens, delay_ms))
        print(f"| CPU per content frame (median of {rounds} rounds) | plain | resumable in-process | resumable Redis |")
        print("|---|---|---|---|")
        for load in loads:
            plain, memory, redis = (
                statistics.median(cpu[load, case]) * 1e6 for case in ("plain", "in-process", "redis")
            )
            print(
                f"| {load} | {plain:.1f} µs | {memory:.1f} µs ({memory / plain:.2f}×) | "
                f"{redis:.1f} µs ({redis / plain:.2f}×) |"
            )
        print()
        print("| resume → first replayed frame (300 resumes after frame 100 of 200) | p50 | p99 |")
        print("|---|---|---|")
        for name, (plain_target, _) in targets.items():
            stream_id = await a_finished_stream(plain_target.port, 200)
            latencies = await resume_latency(plain_target.port, stream_id, 100, 300)
            print(
                f"| {name} | {percentile(latencies, 0.5) * 1e3:.2f} ms | {percentile(latencies, 0.99) * 1e3:.2f} ms |"
            )
    finally:
        for process in reversed(started):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the CPU phases (the median is shown)")
    asyncio.run(main(parser.parse_args().rounds))
