"""The one stream-reader loop (`providers/stream_reader.py`): an event's chunks in order (the
returned one, then the queued ones), comments skipped, the end event stopping the reading
and the body drained after it, the final chunk and a failure after it, and the errors —
undecodable data as the reader's "malformed", a transport failure, bad gzip or an endless
line through the reader's `broken`. Then each provider's reader over real `httpx2` gzip
decoding that breaks mid-stream."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import httpx2
import msgspec
import pytest
from streamgate import sse
from streamgate.chat_types import Chunk, FinishReason, RawEvent, ReasoningChunk, StreamChunk
from streamgate.errors import GatewayError, StreamError, UpstreamError, UpstreamTimeoutError
from streamgate.providers.anthropic_passthrough import PassthroughEvents
from streamgate.providers.anthropic_stream import MessageEvents
from streamgate.providers.gemini_stream import GenerateEvents
from streamgate.providers.openai_responses import RelayedEvents, ResponseEvents
from streamgate.providers.openai_stream import ChatEvents
from streamgate.providers.stream_reader import END, Ending, EventReader, read
from wire_anthropic import text_delta, whole_stream
from wire_gemini import frame, text
from wire_gemini import sse_body as gemini_body
from wire_openai import chunk
from wire_openai import sse_body as openai_body
from wire_openai_responses import event as responses_event


class Words(EventReader):
    """A reader for the tests: `data: w` is the chunk `w`; `a+b+c` is three chunks (the
    first returned, the rest queued); `skip` none; `end` the end; `{...}` JSON to decode."""

    __slots__ = ("ended_by_event", "fail_after")

    def __init__(self, fail_after: GatewayError | None = None) -> None:
        super().__init__("test")
        self.ended_by_event: bool | None = None
        self.fail_after = fail_after

    def on_event(self, event: sse.Event) -> Chunk | Ending | None:
        data = event.data
        if data == "end":
            self.more.append(StreamChunk("(the end event's own)", None, "m", "test"))
            return END
        if data == "skip":
            return None
        if data.startswith("{"):
            msgspec.json.decode(data)
            return None
        first, *rest = data.split("+")
        self.more.extend(ReasoningChunk(word, "m", "test") for word in rest)
        return StreamChunk(first, None, "m", "test")

    def final(self, ended: bool) -> StreamChunk:
        self.ended_by_event = ended
        self.failure = self.fail_after
        return StreamChunk("", FinishReason.STOP, "m", "test")


class Body:
    """An upstream body of `reads`, noting how far it was read; `error` is raised after them."""

    def __init__(self, reads: list[bytes], error: Exception | None = None) -> None:
        self.reads = reads
        self.error = error
        self.served = 0
        self.finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for data in self.reads:
            self.served += 1
            yield data
        if self.error is not None:
            raise self.error
        self.finished = True


async def run(body: AsyncIterator[bytes], reader: EventReader) -> tuple[list[Any], BaseException | None]:
    """What `read` yields (content, reasoning or the final's finish reason), and what it raised."""
    got: list[Any] = []
    try:
        async for item in read(body, reader):
            if type(item) is StreamChunk:
                got.append(item.finish_reason or item.content)
            elif type(item) is ReasoningChunk:
                got.append(("reasoning", item.reasoning))
            else:
                got.append(item)
    except GatewayError as error:
        return got, error
    return got, None


def test_chunks_in_order_comments_skipped_then_the_end_and_the_rest_of_the_body_drained() -> None:
    body = Body(
        [
            b": a comment\n\ndata: Hello\n\ndata: skip\n\ndata: wo",
            b"rld+one+two\n\n",
            b"data: end\n\ndata: after the end\n\n",
            b"data: not read\n\n",
            b"the rest of the chunked body",
        ]
    )
    reader = Words()
    got, error = asyncio.run(run(body.__aiter__(), reader))
    assert error is None
    assert got == [
        "Hello",
        "world",
        ("reasoning", "one"),
        ("reasoning", "two"),
        "(the end event's own)",
        FinishReason.STOP,
    ]
    assert reader.ended_by_event is True
    assert body.finished and body.served == 5  # drained: the connection can go back to the pool


def test_a_body_that_ends_without_an_end_event_gets_its_final_and_then_the_failure() -> None:
    late = StreamError("stopped for safety", type="content_filter", provider="test")
    reader = Words(fail_after=late)
    got, error = asyncio.run(run(Body([b"data: Hi\n\n"]).__aiter__(), reader))
    assert got == ["Hi", FinishReason.STOP]
    assert error is late and reader.ended_by_event is False


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        (httpx2.ReadError("reset"), UpstreamError, "test connection failed mid-stream: ReadError"),
        (httpx2.ReadTimeout("slow"), UpstreamTimeoutError, "test stopped sending data (timed out)"),
        (httpx2.DecodingError("bad gzip"), UpstreamError, "test connection failed mid-stream: DecodingError"),
    ],
)
def test_a_transport_failure_after_some_text_is_the_transport_s_error(
    error: Exception, kind: type[GatewayError], message: str
) -> None:
    got, raised = asyncio.run(run(Body([b"data: Hi\n\n"], error).__aiter__(), Words()))
    assert got == ["Hi"]
    assert type(raised) is kind and str(raised) == message


def test_undecodable_data_is_malformed_and_an_endless_line_is_a_broken_stream() -> None:
    got, raised = asyncio.run(run(Body([b"data: Hi\n\ndata: {oops\n\n"]).__aiter__(), Words()))
    assert got == ["Hi"] and str(raised) == "malformed upstream data from test"
    endless = [b"data: " + b"x" * (sse.MAX_LINE_BYTES + 1)]
    got, raised = asyncio.run(run(Body(endless).__aiter__(), Words()))
    assert got == [] and str(raised).startswith("test sent a broken stream: an event-stream line is longer")


# --- each provider's reader, over httpx2's real gzip decoding breaking mid-stream ---------


def gzip_then_garbage(events: bytes) -> list[bytes]:
    """`events` gzipped and flushed (so they decode whole), then bytes that are not deflate."""
    compressor = zlib.compressobj(wbits=31)
    return [compressor.compress(events) + compressor.flush(zlib.Z_SYNC_FLUSH), b"\xff" * 64]


async def gzip_body(reads: list[bytes]) -> AsyncGenerator[bytes, None]:
    for data in reads:
        yield data


OPENAI = openai_body([chunk("Hello")], done=False)
ANTHROPIC = b"".join(whole_stream()[:1]) + text_delta("Hello")
GEMINI = gemini_body(frame(text("Hello")))
RESPONSES = responses_event("response.output_text.delta", {"item_id": "msg_1", "delta": "Hello"})

READERS: list[tuple[str, bytes, Callable[[], EventReader], str]] = [
    ("openai", OPENAI, lambda: ChatEvents("openai", "gpt-4o", False), "openai connection failed mid-stream"),
    ("anthropic", ANTHROPIC, lambda: MessageEvents("claude-sonnet-5-5"), "anthropic connection failed mid-stream"),
    ("anthropic passthrough", ANTHROPIC, lambda: PassthroughEvents("claude-sonnet-5-5"), "anthropic connection"),
    ("gemini", GEMINI, lambda: GenerateEvents("gemini-2.5-flash", False), "gemini sent malformed data"),
    ("responses", RESPONSES, lambda: ResponseEvents("gpt-5", "openai"), "openai connection failed mid-stream"),
    ("responses passthrough", RESPONSES, lambda: RelayedEvents("openai"), "openai connection failed mid-stream"),
]


@pytest.mark.parametrize(("events", "make", "message"), [r[1:] for r in READERS], ids=[r[0] for r in READERS])
def test_each_reader_ends_bad_gzip_mid_stream_as_an_upstream_error_after_the_text(
    events: bytes, make: Callable[[], EventReader], message: str
) -> None:
    async def scenario() -> tuple[list[Any], BaseException | None]:
        response = httpx2.Response(
            200, headers={"content-encoding": "gzip"}, content=gzip_body(gzip_then_garbage(events))
        )
        try:
            return await run(response.aiter_bytes(), make())
        finally:
            await response.aclose()

    got, raised = asyncio.run(scenario())
    texts = [item for item in got if item == "Hello" or (type(item) is RawEvent and b"Hello" in item.data)]
    assert texts, got
    assert type(raised) is UpstreamError and str(raised).startswith(message), raised
