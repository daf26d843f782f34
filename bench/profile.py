"""Where the server's CPU goes per short request: py-spy on streamgate under 8-token streams.

    python -m bench.profile [--requests 4000] [--concurrency 16] [--tokens 8] [--top 40] [--svg FILE]

The mock upstream and this client on core 1, the server on core 0, as in `python -m bench`;
py-spy samples the server (`--native` off, idle frames off) while the requests run and
the collapsed stacks are summed here: each function's own share of the samples and its
share with what it calls. CPU per request (the server's utime + stime over the requests)
is printed beside, so a profile and its figure come from one run. Every process started
here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.client import DIALECTS, Target, run_streams
from bench.run import (
    CLIENT_CORE,
    SERVER_CORE,
    Processes,
    cpu_seconds,
    free_port,
    idle_cpu_seconds,
    provider_env,
    wait_ready,
)


def summarize(collapsed: Path, top: int) -> str:
    """The `top` functions by own samples and by samples with their callees."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if "Runner.run" not in stack:
            continue  # another thread: an idle pool worker waiting, sampled as busy
        count = int(count_text)
        samples += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [f"{samples} samples of the event loop's thread"]
    for title, counter in (("own", own), ("with callees", total)):
        lines.append(f"\n-- {title} --")
        for frame, count in counter.most_common(top):
            lines.append(f"{100 * count / samples:5.1f}%  {frame}")
    return "\n".join(lines)


async def profile(args: argparse.Namespace) -> None:
    processes = Processes()
    try:
        mock = processes.start("mock", [sys.executable, "-m", "bench.mock_upstream"], {}, CLIENT_CORE)
        mock_port = int(mock.stdout.readline().split()[1])  # type: ignore[union-attr]
        port = free_port()
        env = {**provider_env(mock_port), "HOST": "127.0.0.1", "PORT": str(port), **dict(args.env)}
        server = processes.start("streamgate", [sys.executable, "server.py"], env, SERVER_CORE)
        await wait_ready("127.0.0.1", port, "/api/v1/chat/stream/health", server, "streamgate")
        target = Target("streamgate", "127.0.0.1", port, DIALECTS[args.dialect], "openai", server.pid)
        load = dict(concurrency=args.concurrency, tokens=args.tokens, delay_ms=0.0, timeout_s=60.0)
        await run_streams(target, count=500, **load)  # warm-up
        await idle_cpu_seconds(server.pid)
        collapsed = Path(tempfile.mkdtemp()) / "server.collapsed"
        spy = subprocess.Popen(
            [
                "py-spy",
                "record",
                "--pid",
                str(server.pid),
                "--format",
                "raw",
                "--rate",
                "500",
                "--function",
                "-o",
                str(collapsed),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await asyncio.sleep(1.0)  # py-spy attached
        before = cpu_seconds(server.pid)
        outcomes = await run_streams(target, count=args.requests, **load)
        spent = cpu_seconds(server.pid) - before
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        spy.wait(10)
        failed = sum(1 for outcome in outcomes if not outcome.ok)
        print(f"{args.requests} requests of {args.tokens} tokens at c={args.concurrency}, {failed} failed")
        print(f"server CPU per request {1e6 * spent / args.requests:.0f} µs (py-spy attached: sampling adds some)")
        print(summarize(collapsed, args.top))
        if args.svg:
            shutil.copy(collapsed, args.svg)
    finally:
        processes.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=8, help="tokens per stream (8: the short requests' figure)")
    parser.add_argument("--dialect", default="native", choices=sorted(DIALECTS))
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--svg", help="also keep the collapsed stacks here (for flamegraph tools)")
    parser.add_argument("--env", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    args = parser.parse_args()
    if shutil.which("py-spy") is None:
        raise SystemExit("bench.profile: py-spy is not installed (pip install py-spy)")
    asyncio.run(profile(args))


if __name__ == "__main__":
    main()
