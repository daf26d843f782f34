"""What routes cost and buy, in one run:

    python -m bench.routes [--requests 400]

- TTFT p99 through a hedge route (target A: first token after 2 s on 5% of requests,
  else 20 ms; target B: 50 ms; `hedge_after_ms = 200`) vs A alone, and upstream requests
  per client request on that route;
- gateway CPU per 8-token request through a one-target route vs naming the provider;
- a fallback after an upstream `429`: time added beyond the failed attempt, from the
  429 leaving target A to the next target (B) receiving the request: the loopback
  transit both ways and all the gateway does in between (both upstreams share one clock).

The gateway runs as `python -m streamgate` (pinned to core 0 when `taskset` exists); the
scripted upstreams (A at `OPENAI_BASE_URL`, B at `TOGETHER_BASE_URL`, both OpenAI's wire)
and this client share the other core. Every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.run import cpu_seconds, free_port, percentile

ROOT = Path(__file__).resolve().parent.parent
SCOUT = "meta-llama/Llama-4-Scout-17B-16E-Instruct"
MAVERICK = "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8"
CONFIG = f"""
[routes.hedged]
targets = ["openai/slowtail", "llama4/{SCOUT}"]
strategy = "hedge"
hedge_after_ms = 200

[routes.a_only]
targets = ["openai/slowtail"]

[routes.solo]
targets = ["openai/fast8"]

[routes.fallback]
targets = ["openai/ratelimit", "llama4/{MAVERICK}"]
"""
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def sse(tokens: int) -> bytes:
    chunks: list[dict[str, object]] = [
        {"choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}]} for i in range(tokens)
    ]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    usage = {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": 5 + tokens}
    chunks.append({"choices": [], "usage": usage})
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    return b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)


class Upstreams:
    """A and B in a thread: A answers by model (`slowtail`: 2 s on every 20th request, else
    20 ms; `fast8`: 8 tokens at once; `ratelimit`: 429 on every other request), B by model (Scout: 50 ms;
    Maverick: at once). Counts the requests each got."""

    def __init__(self) -> None:
        self.counts = {"a": 0, "b": 0}
        self.slowtail = 0
        self.ratelimit = 0
        self.ports: dict[str, int] = {}
        #: When A last wrote a 429, and when B last received a request for Maverick.
        self.refused_at = 0.0
        self.fallback_at = 0.0

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        for name in ("a", "b"):
            server = loop.run_until_complete(
                asyncio.start_server(lambda r, w, name=name: self.connection(name, r, w), "127.0.0.1", 0, backlog=1024)
            )
            self.ports[name] = server.sockets[0].getsockname()[1]
        threading.Thread(target=loop.run_forever, daemon=True).start()

    async def connection(self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                model = json.loads(await reader.readexactly(length))["model"]
                self.counts[name] += 1
                if model == MAVERICK:
                    self.fallback_at = time.perf_counter()
                self.ratelimit += model == "ratelimit"
                if model == "ratelimit" and self.ratelimit % 2:  # every other one: 5 in a row open the breaker
                    body = b'{"error": {"message": "slow down", "type": "requests", "param": null, "code": null}}'
                    writer.write(
                        b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
                        b"retry-after: 0\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
                    )
                    self.refused_at = time.perf_counter()
                    continue
                writer.write(HEAD)
                delay = 0.0
                if model == "slowtail":
                    self.slowtail += 1
                    delay = 2.0 if self.slowtail % 20 == 0 else 0.02
                elif model == SCOUT:
                    delay = 0.05
                if delay:
                    await writer.drain()
                    eof = asyncio.ensure_future(reader.read(1))
                    done, _ = await asyncio.wait([eof], timeout=delay)
                    if done:  # the gateway closed this attempt (a hedge loser)
                        return
                    eof.cancel()
                    await asyncio.gather(eof, return_exceptions=True)
                writer.write(sse(8))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()


async def ttft(client: httpx.AsyncClient, body: dict[str, object]) -> float:
    """Seconds from the request to its first content frame (also reads the rest)."""
    started = time.perf_counter()
    first = None
    async with client.stream("POST", "/api/v1/chat/stream", json=body) as response:
        assert response.status_code == 200, response.status_code
        async for line in response.aiter_lines():
            if first is None and line.startswith("data: {"):
                first = time.perf_counter() - started
    assert first is not None
    return first


async def many(count: int, concurrency: int, make: object) -> list[float]:
    semaphore = asyncio.Semaphore(concurrency)

    async def one(index: int) -> float:
        async with semaphore:
            return await make(index)  # type: ignore[operator, no-any-return]

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def message(model: str, provider: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if provider is not None:
        body["provider"] = provider
    return body


async def measure(url: str, pid: int, upstreams: Upstreams, requests: int) -> dict[str, float | None]:
    figures: dict[str, float | None] = {}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        await many(50, 8, lambda _: ttft(client, message("solo")))  # warm up
        # 1. the slow tail: A alone vs the hedge route (5% of A's answers take 2 s)
        # (in rounds, alternating, so that the machine's drift hits both alike)
        alone: list[float] = []
        hedged: list[float] = []
        asked = 0
        for _ in range(4):
            upstreams.slowtail = 0
            alone += await many(requests // 4, 16, lambda _: ttft(client, message("a_only")))
            upstreams.slowtail, upstreams.counts = 0, {"a": 0, "b": 0}
            hedged += await many(requests // 4, 16, lambda _: ttft(client, message("hedged")))
            asked += upstreams.counts["a"] + upstreams.counts["b"]
        figures["ttft_p99_a_alone_ms"] = 1000 * (percentile(alone, 99) or 0)
        figures["ttft_p99_hedged_ms"] = 1000 * (percentile(hedged, 99) or 0)
        figures["ttft_p50_a_alone_ms"] = 1000 * (percentile(alone, 50) or 0)
        figures["ttft_p50_hedged_ms"] = 1000 * (percentile(hedged, 50) or 0)
        figures["ttft_max_hedged_ms"] = 1000 * max(hedged)
        figures["ttft_p99_hedged_vs_alone"] = figures["ttft_p99_hedged_ms"] / figures["ttft_p99_a_alone_ms"]
        figures["upstream_requests_per_request"] = asked / len(hedged)
        # 2. CPU per 8-token request: a one-target route vs naming the provider, in rounds
        cpu = {"route": 0.0, "provider": 0.0}
        for _ in range(5):
            for name, body in (("route", message("solo")), ("provider", message("fast8", "openai"))):
                before = cpu_seconds(pid)
                await many(requests, 8, lambda _, body=body: ttft(client, body))
                cpu[name] += cpu_seconds(pid) - before
        figures["cpu_us_per_request_route"] = 1e6 * cpu["route"] / (5 * requests)
        figures["cpu_us_per_request_provider"] = 1e6 * cpu["provider"] / (5 * requests)
        figures["cpu_route_vs_provider"] = cpu["route"] / cpu["provider"]
        # 3. a fallback after a 429: from A's 429 leaving A to B receiving the request (one
        # request at a time; both upstreams share this process's clock)
        added: list[float] = []
        while len(added) < requests:
            response = await client.post("/api/v1/chat", json=message("fallback"))
            assert response.status_code == 200, response.text
            if response.headers["x-streamgate-attempts"] == "2":
                added.append(upstreams.fallback_at - upstreams.refused_at)
        figures["fallback_added_ms_median"] = 1000 * statistics.median(added)
        figures["fallback_added_ms_p99"] = 1000 * (percentile(added, 99) or 0)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    upstreams = Upstreams()
    upstreams.start()
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "streamgate.toml"
        config.write_text(CONFIG)
        env = {
            **{k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")},
            "OPENAI_API_KEY": "sk-bench",
            "TOGETHER_API_KEY": "tg-bench",
            "ACCESS_LOG": "0",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{upstreams.ports['a']}/v1",
            "TOGETHER_BASE_URL": f"http://127.0.0.1:{upstreams.ports['b']}/v1",
            "UPSTREAM_MAX_RETRIES": "0",
            "MODEL_CATALOG_REFRESH_S": "0",
            "PORT": str(port),
        }
        pinned = ["taskset", "-c", "0"] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
        if pinned:
            os.sched_setaffinity(0, {1})
        gateway = subprocess.Popen(
            [*pinned, sys.executable, "-m", "streamgate", "--config", str(config)],
            cwd=directory,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(Path(directory) / "gateway.log", "wb"),
        )  # noqa: SIM115
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(url + "/api/v1/chat/stream/health", timeout=1)
                    break
                except httpx.TransportError:
                    assert gateway.poll() is None and time.monotonic() < deadline, "the gateway did not start"
                    time.sleep(0.1)
            try:
                figures = asyncio.run(measure(url, gateway.pid, upstreams, args.requests))
            except BaseException:
                print((Path(directory) / "gateway.log").read_text()[-3000:], file=sys.stderr)
                raise
        finally:
            os.kill(gateway.pid, signal.SIGTERM)
            gateway.wait(10)
    for name, value in figures.items():
        print(f"{name:34} {value:10.3f}" if value is not None else f"{name:34} -")


if __name__ == "__main__":
    main()
