"""What observability costs: CPU per 8-token request and per content frame, for the same
code with OpenTelemetry off and on (batch exporter to a loopback OTLP/HTTP receiver), and
optionally for an older checkout (`--base DIR`, a directory holding that checkout as
`streamgate/`).

    python -m bench.otel [--rounds 5] [--requests 800] [--base /tmp/base]

Like `python -m bench`: the servers pinned to core 0, the mock upstream, the receiver and
this client to core 1, every target measured in each round in rotating order; the figures
that matter are the ratios within one run. With OTel on, a phase's CPU is read once the
receiver holds every span of its requests (two per request: the request's and its one
attempt's), so the batch exports a phase causes are counted in that phase, whenever the
batch processor runs them (its default `OTEL_BSP_SCHEDULE_DELAY`: within 5 s). Every process
started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.ab import load_options, run
from bench.client import DIALECTS, Outcome, Target, run_streams
from bench.run import (
    CLIENT_CORE,
    SERVER_CORE,
    Processes,
    free_port,
    idle_cpu_seconds,
    provider_env,
    wait_ready,
)

SPANS_PER_REQUEST = 2  # the request's span and its one upstream attempt's


class Receiver:
    """An OTLP/HTTP receiver that takes every export, counts the spans, answers 200 (on this
    client's loop)."""

    def __init__(self) -> None:
        self.spans = 0

    async def traces(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await request.read())
        self.spans += sum(len(scope.spans) for resource in export.resource_spans for scope in resource.scope_spans)
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def wait_for(self, spans: int, timeout_s: float = 20.0) -> None:
        """Until `spans` spans came in all (a warning after `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        while self.spans < spans:
            if time.monotonic() > deadline:
                print(f"  the receiver has {self.spans} spans of {spans}", file=sys.stderr)
                return
            await asyncio.sleep(0.05)


async def accept(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=b"", content_type="application/x-protobuf")


async def start_receiver(receiver: Receiver) -> str:
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.traces)
    app.router.add_post("/v1/metrics", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return f"http://127.0.0.1:{port}"


async def measure(args: argparse.Namespace, processes: Processes) -> list[dict[str, tuple[float, float]]]:
    host = "127.0.0.1"
    mock = processes.start("mock", [sys.executable, "-m", "bench.mock_upstream"], {}, CLIENT_CORE)
    env = {**provider_env(int(mock.stdout.readline().split()[1])), "ACCESS_LOG": "0"}  # type: ignore[union-attr]
    env = {name: value for name, value in env.items() if not name.startswith("OTEL_")}
    receiver = Receiver()
    receiver_url = await start_receiver(receiver)
    variants = {"otel_off": {}, "otel_on": {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver_url}}
    if args.base:
        variants = {"base": {"PYTHONPATH": args.base}, **variants}
    targets: list[Target] = []
    for name, extra in variants.items():
        port = free_port()
        process = processes.start(
            name, [sys.executable, "server.py"], {**env, "HOST": host, "PORT": str(port), **extra}, SERVER_CORE
        )
        await wait_ready(host, port, "/api/v1/chat/stream/health", process, name)
        targets.append(Target(name, host, port, DIALECTS["native"], "openai", process.pid))
    rounds: list[dict[str, tuple[float, float]]] = []  # per round: target → (ms per request, µs per frame)
    requests_on = 0  # requests sent to otel_on so far: its spans the receiver must have

    async def exported(target: Target, outcomes: list[Outcome]) -> None:
        nonlocal requests_on
        if target.name == "otel_on":
            requests_on += len(outcomes)
            await receiver.wait_for(requests_on * SPANS_PER_REQUEST)

    for target in targets:  # warm-up
        await exported(target, await run_streams(target, count=200, concurrency=16, tokens=8, delay_ms=0, timeout_s=30))
        await exported(target, await run_streams(target, count=4, concurrency=4, tokens=500, delay_ms=0, timeout_s=30))
    for round_index in range(args.rounds):
        print(f"  round {round_index + 1}/{args.rounds}", file=sys.stderr, flush=True)
        shift = round_index % len(targets)
        figures: dict[str, tuple[float, float]] = {}
        for target in targets[shift:] + targets[:shift]:
            before = await idle_cpu_seconds(target.pid)
            outcomes = await run_streams(
                target, count=args.requests, concurrency=16, tokens=8, delay_ms=0, timeout_s=60
            )
            await exported(target, outcomes)
            request_ms = (await idle_cpu_seconds(target.pid) - before) / sum(o.ok for o in outcomes) * 1e3
            before = await idle_cpu_seconds(target.pid)
            outcomes = await run_streams(
                target, count=args.streams, concurrency=args.streams, tokens=args.tokens, delay_ms=0, timeout_s=180
            )
            await exported(target, outcomes)
            frame_us = (await idle_cpu_seconds(target.pid) - before) / sum(o.frames for o in outcomes if o.ok) * 1e6
            figures[target.name] = (request_ms, frame_us)
        rounds.append(figures)
        print(
            "   " + "  ".join(f"{name} {ms:.3f} ms {us:.2f} µs" for name, (ms, us) in figures.items()), file=sys.stderr
        )
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.otel", description=__doc__.splitlines()[0])
    load_options(parser)
    parser.add_argument("--base", help="a directory holding an older checkout as streamgate/ (for PYTHONPATH)")
    args = parser.parse_args()
    rounds = run(measure, args)
    print(
        f"{'target':10} {'CPU ms / 8-token request':>26} {'CPU µs / content frame':>24}   "
        f"(medians of {args.rounds} rounds)"
    )
    for name in rounds[0]:
        request_ms = statistics.median(figures[name][0] for figures in rounds)
        frame_us = statistics.median(figures[name][1] for figures in rounds)
        print(f"{name:10} {request_ms:26.3f} {frame_us:24.2f}")
    pairs = [("otel_on", "otel_off")] + ([("otel_off", "base")] if "base" in rounds[0] else [])
    for over, under in pairs:  # the median of each round's own ratio: drift between rounds cancels out
        request = statistics.median(figures[over][0] / figures[under][0] for figures in rounds)
        frame = statistics.median(figures[over][1] / figures[under][1] for figures in rounds)
        print(f"{over} / {under}: request {request:.3f}x, frame {frame:.3f}x")


if __name__ == "__main__":
    main()
