"""What `/v1/messages` costs against the native endpoint, to the same upstream:

    python -m bench.messages [--quick]

CPU per content frame of the gateway (pinned to core 0, the mock and this client to
core 1), in rounds of rotating order so drift hits every target alike:
- `/v1/messages` → anthropic (the passthrough) vs `/api/v1/chat/stream` → anthropic;
- `/v1/messages` → `openai/…` (translated) vs `/api/v1/chat/stream` → openai;
and the time to first token at concurrency 1 of the passthrough against the native path.
The mock is `bench.mock_upstream`; every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from dataclasses import replace

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
#: The Messages dialect with the model named `<provider>/<model>` for a provider not its own.
MESSAGES = replace(
    DIALECTS["anthropic"],
    body=lambda model, provider: DIALECTS["anthropic"].body(
        model if provider == "anthropic" else f"{provider}/{model}", provider
    ),
)


async def main_async(quick: bool) -> None:
    processes = Processes()
    try:
        mock = processes.start("mock", [sys.executable, "-m", "bench.mock_upstream"], {}, CLIENT_CORE)
        mock_port = int(mock.stdout.readline().split()[1])  # type: ignore[union-attr]
        port = free_port()
        server = processes.start(
            "streamgate",
            [sys.executable, "server.py"],
            {**provider_env(mock_port), "HOST": HOST, "PORT": str(port), "ACCESS_LOG": "0"},
            SERVER_CORE,
        )
        await wait_ready(HOST, port, "/api/v1/chat/stream/health", server, "streamgate")
        targets = {
            "native→anthropic": Target("native→anthropic", HOST, port, DIALECTS["native"], "anthropic", server.pid),
            "messages→anthropic": Target("messages→anthropic", HOST, port, MESSAGES, "anthropic", server.pid),
            "native→openai": Target("native→openai", HOST, port, DIALECTS["native"], "openai", server.pid),
            "messages→openai": Target("messages→openai", HOST, port, MESSAGES, "openai", server.pid),
        }
        rounds, streams, tokens, ttft_streams = (2, 32, 500, 30) if quick else (4, 64, 2000, 100)
        cpu = dict.fromkeys(targets, 0.0)
        frames = dict.fromkeys(targets, 0)
        ttft: dict[str, list[float]] = {name: [] for name in ("native→anthropic", "messages→anthropic")}
        for target in targets.values():  # warm-up
            await run_streams(target, count=32, concurrency=8, tokens=16, delay_ms=0, timeout_s=30)
        names = list(targets)
        for round_index in range(rounds):
            order = names[round_index % len(names) :] + names[: round_index % len(names)]
            for name in order:
                target = targets[name]
                before = await idle_cpu_seconds(server.pid)
                outcomes = await run_streams(
                    target, count=streams, concurrency=16, tokens=tokens, delay_ms=0, timeout_s=60
                )
                cpu[name] += await idle_cpu_seconds(server.pid) - before
                failed = [o for o in outcomes if not o.ok]
                assert not failed, f"{name}: {failed[0]}"
                frames[name] += streams * tokens
                if name in ttft:
                    outcomes = await run_streams(
                        target, count=ttft_streams, concurrency=1, tokens=4, delay_ms=0, timeout_s=30
                    )
                    ttft[name] += [o.ttft * 1000 for o in outcomes if o.ok]
        per_frame = {name: cpu[name] / frames[name] * 1e6 for name in targets}
        for name in targets:
            print(f"{name:20} {per_frame[name]:6.2f} µs CPU per content frame")
        passthrough = per_frame["messages→anthropic"] / per_frame["native→anthropic"]
        translated = per_frame["messages→openai"] / per_frame["native→openai"]
        print(f"passthrough / native → anthropic: {passthrough:.2f}× (target ≤ 1.0×)")
        print(f"translated / native → openai:     {translated:.2f}× (target ≤ 1.2×)")
        medians = {name: statistics.median(values) for name, values in ttft.items()}
        p99 = {name: percentile(values, 99) for name, values in ttft.items()}
        print(
            f"TTFT c=1 median: native {medians['native→anthropic']:.3f} ms, passthrough "
            f"{medians['messages→anthropic']:.3f} ms (added "
            f"{medians['messages→anthropic'] - medians['native→anthropic']:+.3f} ms; target ≤ +0.1 ms); "
            f"p99 {p99['native→anthropic']:.3f} / {p99['messages→anthropic']:.3f} ms"
        )
    finally:
        processes.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and streams")
    asyncio.run(main_async(parser.parse_args().quick))


if __name__ == "__main__":
    main()
