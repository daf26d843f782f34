"""Anthropic's Messages API as the client wrote it: the `/v1/messages` dialect's way to the
`anthropic` provider. The body goes upstream as it came (only `model` changes, when a route
renames it), with the client's `anthropic-*` headers; the answer comes back as Anthropic
sent it: each SSE event as a `RawEvent` (the same event name and JSON text), then one
final `StreamChunk` carrying the stop reason and usage for the gateway's own bookkeeping.

It sends through the `anthropic` adapter's own SDK client and transport (the requests are
`AnthropicRequest`s prepared once per path, as the adapter prepares its own), so the
configured key, base URL, timeouts and retry policy are the adapter's. An error status
from Anthropic is raised with its body (`GatewayError.upstream_body`, at most
`MAX_ERROR_BODY` bytes) and status, for the dialect to answer as Anthropic sent it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable

import anthropic
import httpx2
import msgspec
from anthropic._models import FinalRequestOptions

from .. import sse
from ..adapter import ChunkStream, open_with_retries
from ..chat_types import Chunk, FinishReason, RawEvent, StreamChunk
from ..errors import GatewayError, ProviderNotConfiguredError, UpstreamError
from ..upstream_http import response_body
from .anthropic_request import PROVIDER
from .anthropic_stream import KEY_ENV, STOP_REASONS, AnthropicStreamAdapter, InputUsage, MessageEvents, TokenCounts
from .stainless import AnthropicRequest, map_sdk_error, map_transport_error
from .stream_reader import END, Ending, read

#: The largest upstream error body passed on as it came (a bigger one is answered in words).
MAX_ERROR_BODY = 64 * 1024
#: The paths the dialect passes through (`?beta=true`: what Claude Code and the SDKs' beta
#: clients add; kept, so Anthropic sees the request as the client made it).
PATHS = ("/v1/messages", "/v1/messages?beta=true", "/v1/messages/count_tokens", "/v1/messages/count_tokens?beta=true")
_ANTHROPIC = b"anthropic-"


class _Answer(msgspec.Struct):
    """A whole (not streamed) message: only what the bookkeeping reads."""

    stop_reason: str | None = None
    usage: InputUsage = msgspec.field(default_factory=InputUsage)


_answer_decoder = msgspec.json.Decoder(_Answer)


class AnthropicPassthrough:
    """The requests of one `anthropic` adapter's client, sent with a client's body and
    headers. The SDK's own `anthropic-*` headers (its `anthropic-version`) are left out
    once, here; a client that sends none gets the SDK's version."""

    def __init__(self, adapter: AnthropicStreamAdapter) -> None:
        self.adapter = adapter
        client = adapter._client
        self.requests: dict[str, AnthropicRequest] = {}
        self.default_headers: list[tuple[bytes, bytes]] = []
        for path in PATHS:
            prepared = AnthropicRequest(client, FinalRequestOptions.construct(method="post", url=path, content=b""))
            self.default_headers = [h for h in prepared.headers if h[0].lower().startswith(_ANTHROPIC)]
            prepared.headers = [h for h in prepared.headers if not h[0].lower().startswith(_ANTHROPIC)]
            self.requests[path] = prepared

    async def send(self, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> httpx2.Response:
        """`body` to `path` with the client's `anthropic-*` `headers`, retried as the
        adapter retries; the response once Anthropic answered 2xx."""
        if not self.adapter.configured:
            raise ProviderNotConfiguredError(f"anthropic is not configured; set {KEY_ENV}", provider=PROVIDER)
        request = self.requests[path]
        sent = [*headers, *(h for h in self.default_headers if h[0].lower() not in {name for name, _ in headers})]

        async def open_once() -> httpx2.Response:
            try:
                return await request.send(body, sent)
            except (anthropic.APIStatusError, anthropic.APIConnectionError, httpx2.RequestError) as error:
                raise upstream_error(error) from None

        return await open_with_retries(open_once, max_retries=self.adapter.max_retries)

    async def open(
        self, path: str, body: bytes, headers: list[tuple[bytes, bytes]], *, streaming: bool, model: str
    ) -> ChunkStream:
        """The stream of a `POST /v1/messages`: the upstream's events (`streaming`) or its
        one JSON answer as one `RawEvent`, then the final chunk."""
        response = await self.send(path, body, headers)
        chunks, release = response_body(response)
        reader = read_events(chunks, model) if streaming else read_answer(chunks, model)
        return ChunkStream(reader, release)

    async def count_tokens(self, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
        """Anthropic's own `count_tokens` answer, as it came."""
        response = await self.send(path, body, headers)
        try:
            return await response.aread()
        except httpx2.RequestError as error:
            raise map_transport_error(error, provider=PROVIDER) from None
        finally:
            await response.aclose()


def forwarded_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The client's `anthropic-*` headers (`anthropic-version`, `anthropic-beta`, …), as sent."""
    return [(name, value) for name, value in headers if name.startswith(_ANTHROPIC)]


def upstream_error(error: Exception) -> GatewayError:
    """The contract's error for a failed opening; an error status keeps Anthropic's own
    status and body, for the dialect to answer as Anthropic sent it."""
    mapped = map_sdk_error(
        error,
        provider=PROVIDER,
        key_env=KEY_ENV,
        status_error=anthropic.APIStatusError,
        timeout_error=anthropic.APITimeoutError,
        connection_error=anthropic.APIConnectionError,
    )
    if isinstance(error, anthropic.APIStatusError):
        body = error.response.content
        if 400 <= error.response.status_code and body and len(body) <= MAX_ERROR_BODY:
            mapped.upstream_body = body
            mapped.status = error.response.status_code
    return mapped


def event_bytes(event: sse.Event) -> bytes:
    """One event as Anthropic framed it: its name and its data (one `data:` line per line)."""
    if "\n" in event.data:
        return sse.encode_event(event.data, event=event.event)
    return b"event: %b\ndata: %b\n\n" % (event.event.encode(), event.data.encode())


def read_events(body: AsyncIterator[bytes], model: str) -> AsyncGenerator[Chunk, None]:
    """Each upstream event as a `RawEvent` (`PassthroughEvents`); after `message_stop`, the
    final chunk with the stop reason and usage."""
    return read(body, PassthroughEvents(model))


class PassthroughEvents(MessageEvents):
    """Each event as a `RawEvent` (content deltas marked as tokens), reading only the stop
    reason and usage on the way (`MessageEvents` makes the final chunk of them). Anthropic's
    mid-stream `event: error` ends the stream with a failure carrying its data as the
    upstream body."""

    __slots__ = ()

    def on_event(self, event: sse.Event) -> Chunk | Ending | None:
        name = event.event
        if name == "content_block_delta":
            return RawEvent(event_bytes(event), True)
        if name == "message_delta" or name == "message_start":
            self.on_message_event(name, event.data)
        elif name == "message_stop":
            self.more.append(RawEvent(event_bytes(event)))
            return END
        elif name == "error":
            error = UpstreamError("anthropic failed mid-stream", provider=PROVIDER)
            error.upstream_body = event.data.encode()[:MAX_ERROR_BODY]
            raise error
        return RawEvent(event_bytes(event))


async def read_answer(body: AsyncIterator[bytes], model: str) -> AsyncGenerator[Chunk, None]:
    """A whole message: its bytes as one `RawEvent`, then the final chunk."""
    try:
        data = b"".join([part async for part in body])
        answer = _answer_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise UpstreamError("anthropic sent a malformed message", provider=PROVIDER) from None
    except httpx2.TransportError as error:
        raise map_transport_error(error, provider=PROVIDER) from None
    usage = TokenCounts()
    usage.update(answer.usage)
    yield RawEvent(data, True)
    yield StreamChunk("", STOP_REASONS.get(answer.stop_reason, FinishReason.STOP), model, PROVIDER, usage.total())
