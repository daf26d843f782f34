"""Upstreams that break HTTP/1.1 or SSE in the ways a hand-written client gets wrong,
driven through the real `OpenAIStreamAdapter` (and our app) over `upstream_http`.

Each upstream is a raw asyncio server on 127.0.0.1 (`LoopbackUpstream`) writing exact
bytes: a `1xx` before the answer, bytes after a response's end, an endless header block,
an endless SSE line, a redirect; and a header value holding CR/LF that must never reach
the wire. `test_the_sdk_reads_the_scripted_answers` proves the well-formed scripts with
the official `openai` SDK's own stream parser.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from contextlib import AbstractContextManager
from typing import Any

import httpx2
import openai
import pytest
import support
from streamgate.chat_types import ChatMessage, ChatRequest
from streamgate.errors import UpstreamError
from streamgate.providers.openai_stream import OpenAIStreamAdapter
from streamgate.upstream_http import sdk_http_client
from support import Answer, settings
from wire_openai import SSE_HEAD, LoopbackUpstream, completion, http_chunk

KEY = "sk-test-0123456789abcdef"
HELLO = {"provider": "openai", "messages": [{"role": "user", "content": "Hello"}]}


def sse_answer(text: str) -> bytes:
    """A whole chunked SSE answer of one delta."""
    return SSE_HEAD + http_chunk(completion([text])) + b"0\r\n\r\n"


def sized_answer(text: str) -> bytes:
    """A whole `content-length` SSE answer of one delta."""
    body = completion([text])
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


def scripted(*replies: bytes | tuple[bytes, ...]) -> Any:
    """A `LoopbackUpstream` behaviour: `replies[n]` for the n-th request, as exact bytes (a
    tuple's pieces are separate writes 50 ms apart, so the client reads them separately)."""
    count = itertools.count()

    async def behaviour(writer: asyncio.StreamWriter) -> None:
        reply = replies[next(count)]
        for index, piece in enumerate(reply if isinstance(reply, tuple) else (reply,)):
            if index:
                await asyncio.sleep(0.05)
            writer.write(piece)
            await writer.drain()

    return behaviour


def adapter(upstream: LoopbackUpstream, **overrides: Any) -> OpenAIStreamAdapter:
    config = settings(
        **{
            "openai_api_key": KEY,
            "openai_base_url": upstream.url,
            "upstream_max_retries": 0,
            "upstream_timeout_s": 3.0,
            **overrides,
        }
    )
    return OpenAIStreamAdapter(config)


def texts(upstream: LoopbackUpstream, requests: int, pause_s: float = 0.0) -> list[str]:
    """The answers of `requests` streams, one after the other (`pause_s` apart), through one adapter."""

    async def run() -> list[str]:
        streaming = adapter(upstream)
        answers = []
        try:
            for _ in range(requests):
                answers.append(await text_of(streaming))
                await asyncio.sleep(pause_s)
            return answers
        finally:
            await streaming.aclose()

    return asyncio.run(run())


async def text_of(streaming: OpenAIStreamAdapter) -> str:
    stream = await streaming.stream_chat(
        ChatRequest(messages=[ChatMessage(role="user", content="Hello")], provider="openai")
    )
    try:
        return "".join([chunk.content async for chunk in stream])
    finally:
        await stream.aclose()


def gateway(upstream: LoopbackUpstream, **overrides: Any) -> AbstractContextManager[str]:
    """Our app serving the `openai` adapter, whose upstream is `upstream`, on 127.0.0.1."""
    return support.gateway(
        lambda config: {"openai": OpenAIStreamAdapter(config)},
        **{
            "openai_api_key": KEY,
            "openai_base_url": upstream.url,
            "upstream_max_retries": 2,
            "upstream_timeout_s": 3.0,
            **overrides,
        },
    )


def post(url: str) -> Answer:
    return Answer(httpx2.post(url + "/api/v1/chat/stream", json=HELLO, timeout=10))


INFORMATIONAL = {
    "100": b"HTTP/1.1 100 Continue\r\n\r\n",
    "103": b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n",
    "100+103": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.js>; rel=preload\r\n\r\n",
}


# --- answers that belong to one request only ------------------------------------------------


@pytest.mark.parametrize("informational", INFORMATIONAL.values(), ids=INFORMATIONAL.keys())
def test_a_1xx_is_skipped_and_the_next_request_on_the_connection_gets_its_own_answer(informational: bytes) -> None:
    script = scripted((informational, sse_answer("first user's answer")), sse_answer("second user's answer"))
    with LoopbackUpstream(script).running() as upstream:
        assert texts(upstream, 2) == ["first user's answer", "second user's answer"]
    assert (len(upstream.requests), upstream.connections) == (2, 1)  # the pooled connection was reused


@pytest.mark.parametrize("later", [False, True], ids=["in-the-same-read", "while-idle-in-the-pool"])
def test_bytes_after_a_content_length_body_never_reach_another_request(later: bool) -> None:
    first, smuggled = sized_answer("first user's answer"), sized_answer("smuggled")
    script = scripted((first, smuggled) if later else first + smuggled, sized_answer("second user's answer"))
    with LoopbackUpstream(script).running() as upstream:
        assert texts(upstream, 2, pause_s=0.2) == ["first user's answer", "second user's answer"]
    assert (len(upstream.requests), upstream.connections) == (2, 2)  # the tainted connection was dropped


def test_the_sdk_reads_the_scripted_answers() -> None:
    """The same bytes through `openai.AsyncOpenAI.chat.completions.create(stream=True)`."""

    async def run(url: str) -> list[str]:
        answers = []
        async with openai.AsyncOpenAI(
            api_key=KEY, base_url=url, max_retries=0, http_client=sdk_http_client(settings(upstream_timeout_s=3.0))
        ) as client:
            for _ in range(3):
                stream = await client.chat.completions.create(model="gpt-4o", messages=HELLO["messages"], stream=True)
                answers.append("".join([c.choices[0].delta.content or "" async for c in stream if c.choices]))
        return answers

    script = scripted(
        (INFORMATIONAL["100+103"], sse_answer("one")), sized_answer("two") + sized_answer("x"), sse_answer("three")
    )
    with LoopbackUpstream(script).running() as upstream:
        assert asyncio.run(run(upstream.url)) == ["one", "two", "three"]


# --- limits ---------------------------------------------------------------------------------


async def endless_header_lines(writer: asyncio.StreamWriter) -> None:
    """A head that never ends: one short header line after another until the client leaves."""
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
    for number in range(1_000_000):
        writer.write(b"x-filler-%d: %s\r\n" % (number, b"a" * 100))
        await writer.drain()


ONE_MIB_HEADER = b"HTTP/1.1 200 OK\r\nx-filler: " + b"a" * (1024 * 1024) + b"\r\n\r\n"
HEADS = {"one 1 MiB header line": scripted(ONE_MIB_HEADER), "endless header lines": endless_header_lines}


@pytest.mark.parametrize("head", HEADS.values(), ids=HEADS.keys())
def test_an_oversized_header_block_is_a_prompt_upstream_error(head: Any) -> None:
    with LoopbackUpstream(head).running() as upstream:
        with gateway(upstream, upstream_max_retries=0) as url:
            started = time.monotonic()
            answer = post(url)
            elapsed = time.monotonic() - started
        closed_after = upstream.seconds_to_close(started)
    assert answer.status == 502
    assert answer.json()["error"]["type"] == "upstream_error"
    assert elapsed < 2.0  # refused at the limit, not after the 3 s read timeout
    assert closed_after is not None and closed_after < 2.0  # the client hung up: nothing more was buffered


async def endless_sse_line(writer: asyncio.StreamWriter) -> None:
    """A 200 whose first SSE line never ends: 64 KiB pieces, up to 64 MiB."""
    writer.write(SSE_HEAD + http_chunk(b"data: "))
    for _ in range(1024):
        writer.write(http_chunk(b"x" * 65536))
        await writer.drain()
    writer.write(http_chunk(b"\n\n") + b"0\r\n\r\n")


def test_an_endless_sse_line_ends_the_stream_with_upstream_error_after_the_limit() -> None:
    with LoopbackUpstream(endless_sse_line).running() as upstream:
        with gateway(upstream) as url:
            started = time.monotonic()
            answer = post(url)
        closed_after = upstream.seconds_to_close(started)
    assert answer.status == 200 and answer.text == ""
    final, error, done = answer.events
    assert json.loads(final.data)["finish_reason"] == "error"
    body = json.loads(error.data)["error"]
    assert (error.event, body["type"], body["provider"]) == ("error", "upstream_error", "openai")
    assert body["message"] == "openai sent a broken stream: an event-stream line is longer than 1048576 bytes"
    assert done.data == "[DONE]"
    assert closed_after is not None and closed_after < 3.0  # long before the 64 MiB were sent


# --- statuses and headers ---------------------------------------------------------------------


def test_a_redirect_is_a_502_before_any_200_and_never_retried() -> None:
    redirect = (
        b"HTTP/1.1 302 Found\r\nlocation: https://elsewhere.test/v1/chat/completions\r\ncontent-length: 0\r\n\r\n"
    )
    with LoopbackUpstream(scripted(redirect, redirect, redirect)).running() as upstream:
        with gateway(upstream) as url:
            answer = post(url)
    assert answer.status == 502
    assert answer.json()["error"] == {
        "type": "upstream_error",
        "provider": "openai",
        "message": "openai answered HTTP 302 instead of a stream",
    }
    assert len(upstream.requests) == 1


class Recorder(LoopbackUpstream):
    """Records every byte each connection receives, until the client closes it."""

    def __init__(self) -> None:
        super().__init__(scripted())
        self.received: list[bytes] = []

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.received.append(await reader.read())
        writer.transport.abort()


def test_cr_lf_in_a_header_value_never_reaches_the_wire() -> None:
    with Recorder().running() as upstream:
        with gateway(upstream, openai_api_key="sk-test\r\nx-injected: 1") as url:
            answer = post(url)
        deadline = time.monotonic() + 2  # the gateway is closed: every connection it opened ended
        while len(upstream.received) < upstream.connections and time.monotonic() < deadline:
            time.sleep(0.01)
        received = list(upstream.received)
    assert answer.status == 502
    error = answer.json()["error"]
    assert (error["type"], error["provider"]) == ("upstream_error", "openai")
    assert error["message"].startswith("openai request could not be sent: ")
    assert "x-injected" not in error["message"]
    assert b"".join(received) == b""  # refused before a byte was written, never retried


def test_the_adapter_raises_upstream_error_for_an_oversized_head() -> None:
    with LoopbackUpstream(scripted(ONE_MIB_HEADER)).running() as upstream:
        with pytest.raises(UpstreamError) as caught:
            texts(upstream, 1)
    assert (caught.value.status, caught.value.provider, caught.value.retryable) == (502, "openai", True)
