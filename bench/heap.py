"""Where an open stream's memory goes: the Python heap per stream, by source file.

    python -m bench.heap [--streams 500] [--provider openai] [--by lineno] [--top 30]
    python -m bench.heap --rss [--streams 1000]

Starts the mock and streamgate under `tracemalloc` (as `python -m bench` does: server on
core 0, mock and client on core 1), warms the server, snapshots its heap, opens
`--streams` streams that stay open (a token every 500 ms), snapshots again and prints the
difference per source file divided by the number of streams; then aborts the streams and
stops both processes by their PID. `tracemalloc` slows the server: read the split, not the
speed (the RSS figure of record is `python -m bench`'s).

`--rss`: the server as `python -m bench` starts it (`server.py`, no `tracemalloc`), warmed
the same way; its RSS once idle, then with `--streams` open (as `python -m bench`'s
held-streams phase measures it, alone). `PYTHONPATH=<dir holding streamgate/>` measures
another checkout.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
import sysconfig
import time
import tracemalloc

from bench.client import DIALECTS, HeldStreams, Target, run_streams
from bench.run import (
    CLIENT_CORE,
    RESULTS,
    SERVER_CORE,
    Processes,
    free_port,
    idle_cpu_seconds,
    provider_env,
    raise_open_files_limit,
    tree_rss_kib,
    wait_ready,
)

HOST = "127.0.0.1"
#: Where the server writes the split (`--serve` mode), read by the driver.
REPORT = RESULTS / "heap.txt"


def serve(streams: int, key: str, top: int) -> None:
    """The server side: streamgate with a SIGUSR1 that snapshots the heap (the second
    one writes the difference to `REPORT`)."""
    tracemalloc.start(1)
    snapshots: list[tracemalloc.Snapshot] = []

    def snapshot(*_: object) -> None:
        gc.collect()
        snapshots.append(tracemalloc.take_snapshot())
        if len(snapshots) == 2:
            REPORT.write_text(split(snapshots[1].compare_to(snapshots[0], key), streams, key, top))

    signal.signal(signal.SIGUSR1, snapshot)
    from streamgate import server  # after tracemalloc.start, so the app's own objects are traced

    server.main([])


def split(diff: list[tracemalloc.StatisticDiff], streams: int, key: str = "filename", top: int = 30) -> str:
    total = sum(stat.size_diff for stat in diff)
    lines = [f"{total / streams / 1024:.1f} KiB of Python heap per open stream ({streams} open)"]
    for stat in diff[:top]:
        lines.append(
            f"{stat.size_diff / streams:8.0f} B {stat.count_diff / streams:6.1f} objects  "
            f"{short_path(stat.traceback[0].filename)}" + (f":{stat.traceback[0].lineno}" if key == "lineno" else "")
        )
    return "\n".join(lines) + "\n"


def short_path(filename: str) -> str:
    """`uvicorn/server.py`, `stdlib/asyncio/locks.py`, `pipeline.py`."""
    stdlib = sysconfig.get_paths()["stdlib"] + "/"
    if "site-packages/" in filename:
        return filename.split("site-packages/")[-1]
    if filename.startswith(stdlib):
        return "stdlib/" + filename[len(stdlib) :]
    return filename.removeprefix(os.getcwd() + "/")


async def drive(streams: int, provider: str, key: str, top: int) -> str:
    processes = Processes()
    try:
        mock = processes.start("mock", [sys.executable, "-m", "bench.mock_upstream"], {}, CLIENT_CORE)
        mock_port = int(mock.stdout.readline().split()[1])  # type: ignore[union-attr]
        port = free_port()
        server = processes.start(
            "streamgate",
            [sys.executable, "-m", "bench.heap", "--serve", "--streams", str(streams), "--by", key, "--top", str(top)],
            {**provider_env(mock_port), "HOST": HOST, "PORT": str(port)},
            SERVER_CORE,
        )
        await wait_ready(HOST, port, "/api/v1/chat/stream/health", server, "streamgate")
        target = Target("streamgate", HOST, port, DIALECTS["native"], provider, server.pid)
        await run_streams(target, count=200, concurrency=16, tokens=8, delay_ms=0, timeout_s=10)
        REPORT.unlink(missing_ok=True)
        os.kill(server.pid, signal.SIGUSR1)
        await asyncio.sleep(5)  # the first snapshot of a warm heap takes a few seconds
        held = HeldStreams(target, tokens=10_000, delay_ms=500)
        opened = await held.open(streams, concurrency=100, timeout_s=60)
        if opened != streams:
            raise RuntimeError(f"only {opened} of {streams} streams opened")
        os.kill(server.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 60
        while not REPORT.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        held.abort_all()
        return REPORT.read_text()
    finally:
        processes.stop_all()


async def drive_rss(streams: int, provider: str) -> str:
    processes = Processes()
    try:
        mock = processes.start("mock", [sys.executable, "-m", "bench.mock_upstream"], {}, CLIENT_CORE)
        mock_port = int(mock.stdout.readline().split()[1])  # type: ignore[union-attr]
        port = free_port()
        env = {**provider_env(mock_port), "HOST": HOST, "PORT": str(port)}
        server = processes.start("streamgate", [sys.executable, "server.py"], env, SERVER_CORE)
        await wait_ready(HOST, port, "/api/v1/chat/stream/health", server, "streamgate")
        target = Target("streamgate", HOST, port, DIALECTS["native"], provider, server.pid)
        await run_streams(target, count=200, concurrency=16, tokens=8, delay_ms=0, timeout_s=10)
        await idle_cpu_seconds(server.pid)
        baseline = tree_rss_kib(server.pid)
        held = HeldStreams(target, tokens=10_000, delay_ms=500)
        opened = await held.open(streams, concurrency=100, timeout_s=60)
        if opened != streams:
            raise RuntimeError(f"only {opened} of {streams} streams opened")
        await asyncio.sleep(1.0)
        await idle_cpu_seconds(server.pid)
        loaded = tree_rss_kib(server.pid)
        held.abort_all()
        per_stream = (loaded - baseline) / streams
        return f"{per_stream:.1f} KiB of RSS per open stream ({streams} open, {baseline} KiB before)\n"
    finally:
        processes.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--provider", default="openai", choices=["openai", "anthropic", "gemini"])
    parser.add_argument("--by", default="filename", choices=["filename", "lineno"], help="split by file or by line")
    parser.add_argument("--rss", action="store_true", help="RSS per open stream instead (no tracemalloc)")
    parser.add_argument("--top", type=int, default=30, help="how many files or lines to show")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.streams, args.by, args.top)
        return
    raise_open_files_limit()
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    if args.rss:
        print(asyncio.run(drive_rss(args.streams, args.provider)), end="")
        return
    print(asyncio.run(drive(args.streams, args.provider, args.by, args.top)), end="")


if __name__ == "__main__":
    main()
