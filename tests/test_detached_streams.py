"""Resumable streams are bounded (`MAX_DETACHED_STREAMS`): an abusive client that starts
resumable streams and leaves cannot pile them up. Past the bound a new resumable request is
`429 rate_limited` (in its dialect's shape) before any upstream call, and a stream whose
last reader leaves past it is stopped (its upstream closed). A real gateway process keeps
its memory after 2,000 abandoned resumable requests."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from processes import gateways
from resumable import resume_from, start
from streamgate.app import create_app
from streamgate.errors import StreamNotFoundError
from streamgate.providers.echo import EchoAdapter
from streamgate.resume import Streams
from streamgate.stream_store import Batch, MemoryStore
from support import serve, settings

LONG = " ".join(f"w{i}" for i in range(400))  # 400 words at 20 ms: 8 s, longer than any test here


def body(text: str = LONG, resumable: bool = True) -> dict[str, Any]:
    return {"provider": "echo", "resumable": resumable, "messages": [{"role": "user", "content": text}]}


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


class CountingEcho(EchoAdapter):
    """The echo provider, counting the streams it was asked to open (the upstream calls)."""

    def __init__(self, delay_ms: float) -> None:
        super().__init__(delay_ms)
        self.opened = 0

    async def stream_chat(self, request: Any) -> Any:
        self.opened += 1
        return await super().stream_chat(request)


def test_past_max_detached_streams_a_resumable_request_is_429_before_any_upstream_call() -> None:
    echo = CountingEcho(20)
    app = create_app(settings(max_detached_streams=2), adapters={"echo": echo})
    streams: Streams = app.state.streams
    with serve(app) as url:
        ids = [start(url, 1, body())[0] for _ in range(2)]  # two abandoned streams
        wait_for(lambda: streams.detached == 2)
        opened = echo.opened
        refused = httpx.post(url + "/api/v1/chat/stream", json=body(), timeout=10)
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limited"
        assert "MAX_DETACHED_STREAMS" in refused.json()["error"]["message"]
        assert refused.headers["retry-after"] == "1"
        v1 = httpx.post(
            url + "/v1/chat/completions",
            timeout=10,
            json={
                "model": "echo/echo",
                "stream": True,
                "resumable": True,
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
        assert v1.status_code == 429 and v1.json()["error"]["code"] == "rate_limited"  # OpenAI's shape
        assert echo.opened == opened  # refused before any upstream call
        # Streams that are not resumable are not bounded by it.
        assert httpx.post(url + "/api/v1/chat/stream", json=body("plain", False), timeout=10).status_code == 200
        # A reader following an abandoned stream makes room: it is no longer detached.
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as reader:
            reader.sendall(b"GET /api/v1/chat/stream/%b HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n" % ids[0].encode())
            assert reader.recv(100).startswith(b"HTTP/1.1 200")
            wait_for(lambda: streams.detached == 1)
            assert httpx.post(url + "/api/v1/chat/stream", json=body("short one"), timeout=10).status_code == 200
        wait_for(lambda: streams.detached == 2)  # its reader gone, it runs detached again
        for stream_id in ids:
            assert httpx.delete(f"{url}/api/v1/chat/stream/{stream_id}", timeout=10).status_code == 204
        wait_for(lambda: streams.detached == 0 and not streams.producers)
        assert httpx.post(url + "/api/v1/chat/stream", json=body("again"), timeout=10).status_code == 200


def test_streams_left_at_once_past_the_bound_are_stopped() -> None:
    """Admitted while their clients were there, four streams are left at once with a bound
    of two: the two last to leave are stopped (their upstream closed) and end in words."""
    app = create_app(settings(max_detached_streams=2), adapters={"echo": EchoAdapter(20)})
    streams: Streams = app.state.streams
    with serve(app) as url:
        ids = [start(url, 1, body())[0] for _ in range(1)]

        async def leave_together() -> list[str]:
            async with httpx.AsyncClient(timeout=10) as client:

                async def one() -> str:
                    async with client.stream("POST", url + "/api/v1/chat/stream", json=body()) as response:
                        await anext(response.aiter_bytes())
                        return response.headers["x-stream-id"]

                return list(await asyncio.gather(*(one() for _ in range(3))))

        ids += asyncio.run(leave_together())
        wait_for(lambda: len(streams.producers) == 2)
        assert streams.detached == 2
        ends = [resume_from(url, stream_id).content for stream_id in ids]
        stopped = [end for end in ends if b'"type":"rate_limited"' in end]
        assert len(stopped) == 2, ends
        assert all(end.endswith(b"data: [DONE]\n\n") for end in ends)
        for stream_id in ids:
            httpx.delete(f"{url}/api/v1/chat/stream/{stream_id}", timeout=10)
        wait_for(lambda: streams.detached == 0)


def in_flight(url: str) -> float:
    """`streamgate_streams_in_flight` of the echo provider, from `/metrics`."""
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith('streamgate_streams_in_flight{provider="echo"}'):
            return float(line.split()[-1])
    return 0.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def abandon(url: str, count: int, concurrency: int = 100) -> int:
    """`count` resumable requests, each left as soon as its response head came; the
    number answered 200 (the others were refused)."""
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body(" ".join(f"w{i}" for i in range(300)))).encode()  # 6 s of words each
    request = (
        b"POST /api/v1/chat/stream HTTP/1.1\r\nhost: %b:%b\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%b" % (host.encode(), port.encode(), len(payload), payload)
    )
    gate = asyncio.Semaphore(concurrency)
    started = 0

    async def one() -> None:
        nonlocal started
        async with gate:
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            started += head.startswith(b"HTTP/1.1 200")
            writer.close()

    await asyncio.gather(*(one() for _ in range(count)))
    return started


def test_2000_abandoned_resumable_requests_keep_the_gateway_small(tmp_path: Path) -> None:
    """The review's abusive client on a real `python server.py`: 2,000 resumable requests
    left at once. At most `MAX_DETACHED_STREAMS` (256) go on; once they ended (their logs
    kept for `RESUME_TTL_S`) the gateway's RSS is within 64 MiB of its idle RSS (the figure
    is printed: `pytest -s`). Without the bound all 2,000 ran: +181 MiB."""
    with gateways(tmp_path, 1, ECHO_DELAY_MS="20", ACCESS_LOG="0") as [(process, url)]:  # stdout: an unread pipe
        for _ in range(20):  # warm: the first requests load what every later one uses
            httpx.post(url + "/api/v1/chat/stream", json=body("warm up"), timeout=10)
        idle = rss_kib(process.pid)
        began = time.monotonic()
        started = asyncio.run(abandon(url, 2000))
        seconds = time.monotonic() - began
        wait_for(lambda: in_flight(url) == 0, 60)  # every stream generated to its end, its log kept
        grown = (rss_kib(process.pid) - idle) / 1024
        print(
            f"\n2000 abandoned resumable requests in {seconds:.1f} s: {started} answered 200; "
            f"RSS {idle / 1024:.0f} MiB idle, +{grown:.1f} MiB once they ended (their logs kept)"
        )
        assert started >= 256
        assert grown <= 64
        assert httpx.post(url + "/api/v1/chat/stream", json=body("still here", False), timeout=10).status_code == 200


def test_ended_streams_are_kept_within_a_byte_budget() -> None:
    """Streams started and left over and over end and are kept for `RESUME_TTL_S`: in this
    process, together at most `MAX_KEPT_BYTES` (the oldest forgotten first, a 404 then)."""

    async def run() -> None:
        store = MemoryStore(600, max_kept_bytes=1000)
        for number in range(5):
            stream_log = await store.create(f"s{number}", b"{}", lambda: None)
            stream_log.append(Batch(1, b"x" * 400, True, True))
            await stream_log.close()
        assert list(store.kept) == ["s3", "s4"] and store.kept_bytes == 800
        assert set(store.logs) == {"s3", "s4"}
        with pytest.raises(StreamNotFoundError):
            await store.open("s0")
        assert [batch.data for batch in [b async for b in (await store.open("s4")).batches()]] == [b"x" * 400]
        store.forget("s3")
        assert store.kept_bytes == 400 and set(store.logs) == {"s4"}

    asyncio.run(run())
