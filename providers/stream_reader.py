"""The one loop every provider's stream reader runs: an upstream's event-stream bytes in, our
chunks out.

What is the same for every provider lives here, once (`read`): the loop over the body's
byte chunks, `sse.Decoder` feeding, comments skipped, the end, the drain after the end (so
the connection goes back to the pool), and the errors — a transport failure or an endless
line as `map_transport_error`, undecodable JSON as "malformed". What differs is one small
`EventReader` subclass per provider: its per-stream state and `on_event`, which turns one
event into at most one chunk (returned) or several (queued in `more`), or says that the
stream ended (`END`); then `final` writes the final chunk.

The loop is the hot path (one call per upstream event): the reader's method and queue are
bound to locals before it, nothing is allocated per event, and a chunk is yielded straight
from here to the pipeline (no generator in between).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Final

import httpx2
import msgspec

from .. import sse
from ..chat_types import Chunk, StreamChunk
from ..errors import GatewayError, UpstreamError
from .stainless import map_transport_error


class Ending(enum.Enum):
    END = "end"


#: What `on_event` returns for the event that ends the stream (`data: [DONE]`,
#: `message_stop`, `response.completed`, …).
END: Final = Ending.END


class EventReader:
    """One provider's reading of one stream: its state, and a handler for each event.

    `on_event` returns the event's chunk, `None` (nothing to send), or `END`; an event
    with more than one chunk queues them in `more` (in order; a returned chunk goes first)
    — the end event may queue its own chunks too. `final` runs once the stream ended (by
    `END`, or by the body's end) and returns the final chunk, `None` for none, or raises
    when the stream ended too soon. `failure`, when set by `final`, is raised after the
    final chunk is sent.
    """

    __slots__ = ("provider", "more", "failure")

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.more: list[Chunk] = []  # a list, not a deque: a deque's first block is 0.5 KiB per stream
        self.failure: GatewayError | None = None

    def on_event(self, event: sse.Event) -> Chunk | Ending | None:
        raise NotImplementedError

    def final(self, ended: bool) -> StreamChunk | None:
        raise NotImplementedError

    def malformed(self, error: msgspec.DecodeError) -> GatewayError:
        """The error for an event whose data could not be decoded."""
        return UpstreamError(f"malformed upstream data from {self.provider}", provider=self.provider)

    def broken(self, error: httpx2.RequestError | sse.LineTooLongError) -> GatewayError:
        """The error for a failure while reading the body (a reset, a timeout, bad gzip, an
        endless line)."""
        return map_transport_error(error, provider=self.provider)


async def read(body: AsyncIterator[bytes], reader: EventReader) -> AsyncGenerator[Chunk, None]:
    """`body`'s events through `reader`: each event's chunks as they come, then the final
    chunk; after an `END`, the rest of the body is read to its end (`drain`)."""
    feed = sse.Decoder().feed
    on_event = reader.on_event
    more = reader.more
    ended = False
    event: sse.Event | sse.Comment | None
    chunk: Chunk | Ending | None
    try:
        async for raw in body:
            for event in feed(raw):
                if type(event) is not sse.Event:
                    continue  # a comment
                chunk = on_event(event)
                if chunk is END:
                    ended = True
                    break
                if chunk is not None:
                    yield chunk
                while more:
                    yield more.pop(0)
            if ended:
                break
            raw, event, chunk = b"", None, None  # not kept while the next read is awaited (an idle stream)
    except msgspec.DecodeError as error:  # a `ValidationError` too
        raise reader.malformed(error) from None
    except (httpx2.RequestError, sse.LineTooLongError) as error:
        raise reader.broken(error) from None
    while more:  # the end event's own
        yield more.pop(0)
    final = reader.final(ended)
    if final is not None:
        yield final
    if ended:
        await drain(body)
    if reader.failure is not None:
        raise reader.failure


async def drain(body: AsyncIterator[bytes]) -> None:
    """Read the rest of the body (what follows the end event: the chunked body's end, bounded
    by the read timeout) so the connection goes back to the pool instead of being dropped; a
    failure there costs only the connection's reuse, never the answer."""
    try:
        async for _ in body:
            pass
    except httpx2.HTTPError:
        pass
