"""CPU per tool-call frame against CPU per text frame, for variants of the server measured
in one run: `python -m bench`'s `many_streams` and `tool_streams` phases (64 concurrent
streams of 2,000 tokens; in `tool_streams` each token a `delta.tool_calls` arguments
fragment), without the rest of the full run.

    python -m bench.tool_ratio --variant base PYTHONPATH=/tmp/base --variant new [--rounds 6]

`python -m bench --quick` prints the ratio too, but its phases are too short for the
server's CPU clock (10 ms ticks: both come out at one tick per 1,280 frames). Variants as
in `bench.ab` (a name and `NAME=VALUE` settings); each round measures every variant, in
rotating order, text then tool; the median of the rounds' ratios is the figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from bench.ab import Variant, run, start
from bench.client import run_streams
from bench.run import CLIENT_CORE, Processes, idle_cpu_seconds, provider_env

#: Per variant: µs per text frame, µs per tool-call frame, their ratio; one entry per round.
Rounds = dict[str, tuple[list[float], list[float], list[float]]]


async def measure(args: argparse.Namespace, processes: Processes) -> Rounds:
    mock = processes.start("mock", [sys.executable, "-m", "bench.mock_upstream"], {}, CLIENT_CORE)
    mock_port = int(mock.stdout.readline().split()[1])  # type: ignore[union-attr]
    targets = [await start(variant, provider_env(mock_port), processes) for variant in args.variant]
    for target in targets:  # warm-up
        await run_streams(target, count=300, concurrency=16, tokens=8, delay_ms=0, timeout_s=30)
        await run_streams(target, count=64, concurrency=64, tokens=200, delay_ms=0, timeout_s=60, tool=True)
    rounds: Rounds = {target.name: ([], [], []) for target in targets}
    for index in range(args.rounds):
        print(f"  round {index + 1}/{args.rounds}", file=sys.stderr, flush=True)
        shift = index % len(targets)
        for target in targets[shift:] + targets[:shift]:
            assert target.pid is not None
            per_frame = []
            for tool in (False, True):
                before = await idle_cpu_seconds(target.pid)
                outcomes = await run_streams(
                    target, count=64, concurrency=64, tokens=args.tokens, delay_ms=0, timeout_s=180, tool=tool
                )
                spent = await idle_cpu_seconds(target.pid) - before
                per_frame.append(spent / sum(o.frames for o in outcomes if o.ok) * 1e6)
            text, tool_call, ratios = rounds[target.name]
            text.append(per_frame[0])
            tool_call.append(per_frame[1])
            ratios.append(per_frame[1] / per_frame[0])
    return rounds


def report(rounds: Rounds) -> str:
    lines = [f"{'variant':12} {'µs / text frame':>16} {'µs / tool frame':>16} {'ratio':>6}   each round's ratio"]
    for name, (text, tool_call, ratios) in rounds.items():
        lines.append(
            f"{name:12} {statistics.median(text):16.2f} {statistics.median(tool_call):16.2f}"
            f" {statistics.median(ratios):6.3f}   " + " ".join(f"{ratio:.3f}" for ratio in ratios)
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tool_ratio", description=__doc__.splitlines()[0])
    parser.add_argument("--variant", nargs="+", action="append", type=str, required=True, metavar="NAME [K=V]")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=2000, help="tokens per stream (the full run's 2,000)")
    args = parser.parse_args()
    args.variant = [Variant.parse(words) for words in args.variant]
    print(report(run(measure, args)))


if __name__ == "__main__":
    main()
