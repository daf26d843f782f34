"""OpenAI Chat Completions wire bytes for tests, and upstreams that send them.

`chunk`, `usage_chunk` and `sse_body` build the `chat.completion.chunk` stream exactly as
OpenAI documents it (a role-only first delta, `"usage": null` on every chunk when
`include_usage` was asked for, a last chunk with empty `choices` carrying the usage,
`data: [DONE]`). `MockUpstream` serves scripted responses through `httpx2.MockTransport`
with bodies split wherever a test wants; `LoopbackUpstream` is a real TCP server on
127.0.0.1 for what needs sockets (stalls, resets, noticing a closed connection).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx2

CHUNK_ID = "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG"
UPSTREAM_MODEL = "gpt-4o-2024-08-06"


def chunk(
    content: str | None = None,
    *,
    role: str | None = None,
    finish_reason: str | None = None,
    model: str = UPSTREAM_MODEL,
) -> dict[str, Any]:
    """One `chat.completion.chunk` with one choice (`content=None, role=...` is the
    role-only first delta; `finish_reason=...` alone is the empty-delta last choice)."""
    delta: dict[str, Any] = {}
    if role is not None:
        delta = {"role": role, "content": "", "refusal": None}
    if content is not None:
        delta["content"] = content
    return {
        "id": CHUNK_ID, "object": "chat.completion.chunk", "created": 1741569952, "model": model,
        "service_tier": "default", "system_fingerprint": "fp_eb9dce56a8",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        "usage": None,
    }


def usage_chunk(prompt_tokens: int, completion_tokens: int, model: str = UPSTREAM_MODEL) -> dict[str, Any]:
    """The last chunk when `stream_options.include_usage` is set: empty `choices`."""
    return {
        "id": CHUNK_ID, "object": "chat.completion.chunk", "created": 1741569952, "model": model,
        "service_tier": "default", "system_fingerprint": "fp_eb9dce56a8", "choices": [],
        "usage": {
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        },
    }


def sse_body(chunks: Iterable[dict[str, Any] | bytes], done: bool = True) -> bytes:
    """`data: <json>` events (bytes are sent as they are), then `data: [DONE]`."""
    parts = [c if isinstance(c, bytes) else b"data: " + json.dumps(c, ensure_ascii=False).encode() + b"\n\n"
             for c in chunks]
    if done:
        parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


def completion(pieces: Iterable[str], finish_reason: str = "stop", usage: tuple[int, int] | None = (9, 12)) -> bytes:
    """A whole streamed completion of `pieces`, as OpenAI sends it."""
    chunks = [chunk(role="assistant"), *(chunk(p) for p in pieces), chunk(finish_reason=finish_reason)]
    if usage is not None:
        chunks.append(usage_chunk(*usage))
    return sse_body(chunks)


def split(body: bytes, size: int) -> list[bytes]:
    """`body` in pieces of `size` bytes (so UTF-8 characters straddle reads)."""
    return [body[i : i + size] for i in range(0, len(body), size)]


# --- an upstream through httpx2.MockTransport ---------------------------------------------


class Reply:
    """One scripted upstream response: status, headers and body pieces, each read
    separately by the client."""

    def __init__(self, status: int = 200, pieces: Iterable[bytes] = (), headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.pieces = list(pieces)
        self.headers = {"content-type": "text/event-stream" if status == 200 else "application/json",
                        **(headers or {})}

    @classmethod
    def error(cls, status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
        body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
        return cls(status, [json.dumps(body).encode()], headers)

    async def _body(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            await asyncio.sleep(0)  # a separate network read
            yield piece


class Seen:
    """A request as the upstream received it."""

    def __init__(self, request: httpx2.Request) -> None:
        self.method = request.method
        self.url = str(request.url)
        self.headers = request.headers
        self.json: dict[str, Any] = json.loads(request.content)


class MockUpstream:
    """Answers each request with the next `Reply` and records what it was sent."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.seen: list[Seen] = []

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self._handle))

    async def _handle(self, request: httpx2.Request) -> httpx2.Response:
        self.seen.append(Seen(request))
        reply = self.replies.pop(0)
        return httpx2.Response(reply.status, headers=reply.headers, content=reply._body())


# --- a real upstream on 127.0.0.1 -----------------------------------------------------------

Behaviour = Callable[[asyncio.StreamWriter], Awaitable[None]]

SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def http_chunk(data: bytes) -> bytes:
    """One piece of a `transfer-encoding: chunked` body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashed or cut-off peer does."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class LoopbackUpstream:
    """A tiny HTTP/1.1 server in its own thread: for each request it runs `behaviour(writer)`
    to answer; it counts connections and records when each was closed."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.requests: list[bytes] = []
        self.closed_at: list[float] = []
        self.connections = 0
        self.url = ""

    @contextmanager
    def running(self) -> Iterator[LoopbackUpstream]:
        loop = asyncio.new_event_loop()
        server = loop.run_until_complete(asyncio.start_server(self._connection, "127.0.0.1", 0))
        self.url = "http://127.0.0.1:%d/v1" % server.sockets[0].getsockname()[1]
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self._shutdown(server), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()

    def seconds_to_close(self, since: float, wait_s: float = 2.0) -> float | None:
        """Seconds from `since` until the first connection closed (waiting up to `wait_s`)."""
        deadline = since + wait_s
        while not self.closed_at and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.closed_at[0] - since if self.closed_at else None

    @staticmethod
    async def _shutdown(server: asyncio.Server) -> None:
        server.close()
        connections = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve requests on one kept-alive connection until the client closes it."""
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                self.requests.append(head + await reader.readexactly(length))
                await self.behaviour(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed_at.append(time.monotonic())
            writer.transport.abort()


def leave_mid_stream(url: str, body: dict[str, Any], until: bytes) -> tuple[bytes, float]:
    """POST `body` as a stream, read until `until` arrives, then hang up; return what was
    received and when the client left."""
    received = b""
    with httpx2.Client(timeout=10) as client, client.stream("POST", url, json=body) as response:
        for piece in response.iter_bytes():
            received += piece
            if until in received:
                break
    return received, time.monotonic()
