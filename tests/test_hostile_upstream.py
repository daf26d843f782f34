"""A hostile upstream cannot blow up the gateway's memory: the review's gzip bomb (a small
gzip answer that inflates to hundreds of MiB) as the error answer of every provider's chat
endpoint and as every model list, against a real `python server.py`. The gateway reads at
most `MAX_ERROR_BODY_BYTES` of an error and `MAX_WHOLE_BODY_BYTES` of a model list after
decompression; the client gets a short message, never the upstream's body."""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from processes import gateways
from streamgate.upstream_http import MAX_ERROR_BODY_BYTES, MAX_WHOLE_BODY_BYTES

#: What the bomb inflates to: far past both limits and past the RSS bound asserted.
INFLATED_MIB = 128


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A JSON error whose message is `INFLATED_MIB` MiB of spaces, gzipped (about 0.6 MB)."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    block = b" " * (1 << 20)
    parts = [compressor.compress(b'{"error": {"type": "invalid_request_error", "message": "')]
    parts += [compressor.compress(block) for _ in range(INFLATED_MIB)]
    parts += [compressor.compress(b'"}}'), compressor.flush()]
    return b"".join(parts)


@contextmanager
def hostile_upstream(bomb: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """Answers every request (chats, model lists) with `bomb`: a `400` to a `POST`, a `200`
    to a `GET`, both `content-encoding: gzip`. Yields its base URL and the request lines."""
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                seen.append(head.split(b"\r\n", 1)[0])
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                status = b"400 Bad Request" if head.startswith(b"POST") else b"200 OK"
                writer.write(
                    b"HTTP/1.1 %b\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
                    b"content-length: %d\r\n\r\n%b" % (status, len(bomb), bomb)
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(answer, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", seen
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def test_a_gzip_bomb_from_every_upstream_keeps_the_gateway_small(tmp_path: Path, bomb: bytes) -> None:
    assert MAX_ERROR_BODY_BYTES < MAX_WHOLE_BODY_BYTES < INFLATED_MIB << 20
    with hostile_upstream(bomb) as (upstream, seen):
        env = {
            "OPENAI_API_KEY": "sk-hostile",
            "ANTHROPIC_API_KEY": "sk-ant-hostile",
            "GEMINI_API_KEY": "AIza-h",
            "OPENAI_BASE_URL": upstream + "/v1",
            "ANTHROPIC_BASE_URL": upstream,
            "GEMINI_BASE_URL": upstream,
            "UPSTREAM_MAX_RETRIES": "0",
        }
        with gateways(tmp_path, 1, **env) as [(process, url)]:
            deadline = time.monotonic() + 60
            while sum(line.startswith(b"GET") for line in seen) < 3:  # the catalog asked all three
                assert time.monotonic() < deadline, seen
                time.sleep(0.05)
            for provider in ("openai", "anthropic", "gemini"):
                body = {"provider": provider, "messages": [{"role": "user", "content": "hi"}]}
                for path in ("/api/v1/chat/stream", "/api/v1/chat"):
                    answer = httpx.post(url + path, json=body, timeout=60)
                    error = answer.json()["error"]
                    assert answer.status_code == 502 and error["type"] == "upstream_error", (provider, error)
                    assert "too large" in error["message"] and len(error["message"]) < 300, error
            health = httpx.get(url + "/api/v1/chat/stream/health", timeout=10).json()
            assert health["providers"]["openai"]["models"][0] == "gpt-4o"  # the built-in list kept
            memory = memory_kib(process.pid)
            process.terminate()
            output = process.communicate(timeout=30)[0].decode()
    assert sum(line.startswith(b"POST") for line in seen) == 6
    grown_mib = (memory["VmHWM"] - memory["VmRSS"]) / 1024
    print(
        f"\ngzip bomb ({len(bomb) / 1e6:.1f} MB → {INFLATED_MIB} MiB) x 9: RSS {memory['VmRSS'] / 1024:.0f} MiB, "
        f"peak {memory['VmHWM'] / 1024:.0f} MiB"
    )
    assert grown_mib < 64, memory
    listing = [line for line in output.splitlines() if "listing the" in line]
    assert len(listing) == 3 and all(len(line) < 600 for line in listing), listing
