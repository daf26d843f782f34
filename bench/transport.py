"""The upstream HTTP client alone: CPU per streamed 8-token request through httpx2's own
transport (httpcore2 + h11) against the one every SDK gets here (`upstream_http`: aiohttp).

    python -m bench.transport

Sends 3 × 2,000 requests one after another to the bench mock on 127.0.0.1 (this process on
core 0, the mock on core 1) and prints CPU and wall microseconds per request for each. The
mock is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import httpx2
from streamgate.settings import Settings
from streamgate.upstream_http import sdk_http_client


async def run(client: httpx2.AsyncClient, url: str, n: int, body: bytes) -> tuple[float, float]:
    for _ in range(20):
        async with client.stream("POST", url, content=body, headers={"content-type": "application/json"}) as r:
            async for _ in r.aiter_raw():
                pass
    t0 = time.process_time()
    w0 = time.perf_counter()
    for _ in range(n):
        async with client.stream("POST", url, content=body, headers={"content-type": "application/json"}) as r:
            async for _ in r.aiter_raw():
                pass
    return (time.process_time() - t0) / n * 1e6, (time.perf_counter() - w0) / n * 1e6


async def main() -> None:
    mock = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-m", "bench.mock_upstream"], stdout=subprocess.PIPE)  # noqa: ASYNC220 - once, before any load
    port = int(mock.stdout.readline().split()[1])
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    body = b'{"model":"bench-8-0","messages":[{"role":"user","content":"hi"}],"stream":true}'
    try:
        for name, make in [
            ("httpx2 default (httpcore2/h11)", lambda: httpx2.AsyncClient(timeout=60)),
            ("streamgate (aiohttp)", lambda: sdk_http_client(Settings())),
        ]:
            client = make()
            results = [await run(client, url, 2000, body) for _ in range(3)]
            await client.aclose()
            print(name, "CPU µs/request, wall µs/request:", [f"{c:.0f}/{w:.0f}" for c, w in results])
    finally:
        mock.terminate()
        mock.wait()


if __name__ == "__main__":
    os.sched_setaffinity(0, {0})
    asyncio.run(main())
