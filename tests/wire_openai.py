"""OpenAI Chat Completions wire bytes for tests, and upstreams that send them.

`chunk`, `usage_chunk` and `sse_body` build the `chat.completion.chunk` stream exactly as
OpenAI documents it (a role-only first delta, `"usage": null` on every chunk when
`include_usage` was asked for, a last chunk with empty `choices` carrying the usage,
`data: [DONE]`). `MockUpstream` serves scripted responses through `httpx2.MockTransport`
with bodies split wherever a test wants; `LoopbackUpstream` is a real TCP server on
127.0.0.1 for what needs sockets (stalls, resets, noticing a closed connection).

Tool calls stream as OpenAI sends them (`call_start`: `index`, `id`, `type`,
`function.name`, empty `arguments`; then `call_arguments` fragments; `tool_chunk` carries
them). `openai_refusal` answers a body the way today's OpenAI refuses it (a reasoning model
given `max_tokens` or a non-default `temperature`, a non-reasoning one given
`reasoning_effort`), with OpenAI's exact 400 body; pass it as `MockUpstream(check=...)`.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import openai
from openai.types.chat import ChatCompletionChunk, ParsedChatCompletion

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
        "id": CHUNK_ID,
        "object": "chat.completion.chunk",
        "created": 1741569952,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_eb9dce56a8",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        "usage": None,
    }


def call_start(index: int, call_id: str, name: str) -> dict[str, Any]:
    """A call's first `delta.tool_calls` entry: id, type, name and empty arguments."""
    return {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}


def call_arguments(index: int, fragment: str) -> dict[str, Any]:
    """A later entry of a call: the next `arguments` fragment only."""
    return {"index": index, "function": {"arguments": fragment}}


def tool_chunk(*calls: dict[str, Any], first: bool = False, model: str = UPSTREAM_MODEL) -> dict[str, Any]:
    """A chunk whose delta carries `tool_calls` (`first`: the role-carrying first delta of
    an answer that starts with a call, `content: null`)."""
    body = chunk(model=model)
    delta: dict[str, Any] = {"role": "assistant", "content": None} if first else {}
    delta["tool_calls"] = list(calls)
    if first:
        delta["refusal"] = None
    body["choices"][0]["delta"] = delta
    return body


def usage_chunk(
    prompt_tokens: int, completion_tokens: int, model: str = UPSTREAM_MODEL, reasoning_tokens: int = 0
) -> dict[str, Any]:
    """The last chunk when `stream_options.include_usage` is set: empty `choices`."""
    return {
        "id": CHUNK_ID,
        "object": "chat.completion.chunk",
        "created": 1741569952,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_eb9dce56a8",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
    }


def sse_body(chunks: Iterable[dict[str, Any] | bytes], done: bool = True) -> bytes:
    """`data: <json>` events (bytes are sent as they are), then `data: [DONE]`."""
    parts = [
        c if isinstance(c, bytes) else b"data: " + json.dumps(c, ensure_ascii=False).encode() + b"\n\n" for c in chunks
    ]
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
        self.headers = {"content-type": "text/event-stream" if status == 200 else "application/json", **(headers or {})}

    @classmethod
    def error(cls, status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
        body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
        return cls(status, [json.dumps(body).encode()], headers)

    async def _body(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            await asyncio.sleep(0)  # a separate network read
            yield piece


#: The model families OpenAI reasons with (what `openai_refusal` treats as reasoning models).
OPENAI_REASONING = re.compile(r"(?:ft:)?(?:o[1-9]|gpt-[5-9])(?!.*-chat-latest$)")


def openai_error(message: str, param: str, code: str, status: int = 400) -> Reply:
    """An OpenAI `invalid_request_error` body, as its API answers a refused parameter."""
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    return Reply(status, [json.dumps(body, indent=2).encode()])


def openai_refusal(body: dict[str, Any]) -> Reply | None:
    """Today's OpenAI on a Chat Completions body: its 400 for a parameter the model refuses,
    else `None` (accepted)."""
    reasons = bool(OPENAI_REASONING.match(body["model"]))
    if reasons and "max_tokens" in body:
        return openai_error(
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "max_tokens",
            "unsupported_parameter",
        )
    if reasons and body.get("temperature", 1) != 1:
        return openai_error(
            f"Unsupported value: 'temperature' does not support {body['temperature']} with this "
            "model. Only the default (1) value is supported.",
            "temperature",
            "unsupported_value",
        )
    if not reasons and "reasoning_effort" in body:
        return openai_error(
            "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
            "reasoning_effort",
            "unsupported_parameter",
        )
    return None


class Seen:
    """A request as the upstream received it."""

    def __init__(self, request: httpx2.Request) -> None:
        self.method = request.method
        self.url = str(request.url)
        self.headers = request.headers
        self.json: dict[str, Any] = json.loads(request.content) if request.content else {}


class MockUpstream:
    """Answers each request with the next `Reply` and records what it was sent; with
    `check`, a request `check(body)` answers for (a `Reply`) gets that instead."""

    def __init__(self, *replies: Reply, check: Callable[[dict[str, Any]], Reply | None] | None = None) -> None:
        self.replies = list(replies)
        self.seen: list[Seen] = []
        self.check = check

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self._handle))

    async def _handle(self, request: httpx2.Request) -> httpx2.Response:
        seen = Seen(request)
        self.seen.append(seen)
        reply = self.check(seen.json) if self.check is not None else None
        if reply is None:
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
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
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
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )  # a GET may send none
                self.requests.append(head + await reader.readexactly(length))
                await self.behaviour(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed_at.append(time.monotonic())
            writer.transport.abort()


def openai_like(body: bytes) -> LoopbackUpstream:
    """A loopback upstream answering as today's OpenAI: `openai_refusal`'s 400 for a body
    it refuses, else `body` streamed (chunked, one piece)."""
    upstream: LoopbackUpstream

    async def behaviour(writer: asyncio.StreamWriter) -> None:
        refusal = openai_refusal(json.loads(upstream.requests[-1].split(b"\r\n\r\n", 1)[1]))
        if refusal is None:
            writer.write(SSE_HEAD + http_chunk(body) + b"0\r\n\r\n")
        else:
            error = b"".join(refusal.pieces)
            writer.write(
                b"HTTP/1.1 %d Bad Request\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
                % (refusal.status, len(error), error)
            )
        await writer.drain()

    upstream = LoopbackUpstream(behaviour)
    return upstream


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


# --- the official SDK reading the same bytes (proof that a scripted body is OpenAI's wire) --


def _sdk_client(upstream: MockUpstream) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key="sk-proof", base_url="https://proof.test/v1", max_retries=0, http_client=upstream.client()
    )


def sdk_chunks(body: bytes) -> list[ChatCompletionChunk]:
    """`body` read by the openai SDK as a `chat.completions.create(stream=True)` stream."""

    async def read() -> list[ChatCompletionChunk]:
        client = _sdk_client(MockUpstream(Reply(200, [body])))
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        return [piece async for piece in stream]

    return asyncio.run(read())


def sdk_final(body: bytes) -> ParsedChatCompletion[None]:
    """`body` accumulated by the SDK's `chat.completions.stream()` helper (as agent
    frameworks read a stream): the whole completion, tool calls joined."""

    async def read() -> ParsedChatCompletion[None]:
        client = _sdk_client(MockUpstream(Reply(200, [body])))
        async with client.chat.completions.stream(model="gpt-4o", messages=[{"role": "user", "content": "hi"}]) as s:
            return await s.get_final_completion()

    return asyncio.run(read())


def sdk_request_body(**params: Any) -> dict[str, Any]:
    """The JSON body the openai SDK itself sends for `chat.completions.create(**params)`."""

    async def send() -> dict[str, Any]:
        upstream = MockUpstream(Reply(200, [completion(["ok"])]))
        stream = await _sdk_client(upstream).chat.completions.create(**params)
        async for _ in stream:
            pass
        return upstream.seen[0].json

    return asyncio.run(send())
