"""Where the server's CPU goes per short request: py-spy on streamgate under 8-token streams.

    python -m bench.profile [--requests 4000] [--concurrency 16] [--tokens 8] [--top 40] [--svg FILE]
    python -m bench.profile --syscalls [--requests 3000]    # strace -c: system calls per request

The mock upstream and this client on core 1, the server on core 0, as in `python -m bench`;
py-spy samples the server (`--native` off, idle frames off) while the requests run and
the collapsed stacks are summed here: each function's own share of the samples and its
share with what it calls. CPU per request (the server's utime + stime over the requests)
is printed beside, so a profile and its figure come from one run. With `--syscalls`,
strace counts the server's system calls instead (it slows the server: read the counts,
not the CPU figure). Every process started here is stopped by its PID.
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


def py_spy_command(pid: int, output: Path) -> list[str]:
    """py-spy sampling `pid` at 500 Hz into collapsed stacks (`--native` off, idle off)."""
    return ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "500", "--function", "-o", str(output)]


def strace_command(pid: int, output: Path) -> list[str]:
    """strace counting the system calls of `pid`'s threads."""
    return ["strace", "-c", "-f", "-p", str(pid), "-o", str(output)]


def per_request(table: str, requests: int) -> str:
    """strace's `-c` table: each system call's count per request."""
    lines = ["calls per request  system call"]
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[3].isdigit() and fields[-1] != "total":
            lines.append(f"{int(fields[3]) / requests:17.2f}  {fields[-1]}")
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
        output = Path(tempfile.mkdtemp()) / ("server.strace" if args.syscalls else "server.collapsed")
        spy = subprocess.Popen(
            (strace_command if args.syscalls else py_spy_command)(server.pid, output),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await asyncio.sleep(1.0)  # attached
        before = cpu_seconds(server.pid)
        outcomes = await run_streams(target, count=args.requests, **load)
        spent = cpu_seconds(server.pid) - before
        spy.send_signal(signal.SIGINT)  # py-spy and strace write their output on Ctrl-C
        spy.wait(10)
        failed = sum(1 for outcome in outcomes if not outcome.ok)
        print(f"{args.requests} requests of {args.tokens} tokens at c={args.concurrency}, {failed} failed")
        print(f"server CPU per request {1e6 * spent / args.requests:.0f} µs ({spy.args[0]} attached adds some)")
        if args.syscalls:
            print(per_request(output.read_text(), args.requests))
            return
        print(summarize(collapsed=output, top=args.top))
        if args.svg:
            shutil.copy(output, args.svg)
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
    parser.add_argument("--syscalls", action="store_true", help="count system calls (strace -c), not samples")
    args = parser.parse_args()
    tool = "strace" if args.syscalls else "py-spy"
    if shutil.which(tool) is None:
        raise SystemExit(f"bench.profile: {tool} is not installed (strace: apt-get install strace; py-spy: pip)")
    asyncio.run(profile(args))


if __name__ == "__main__":
    main()
