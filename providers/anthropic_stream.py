"""The `anthropic` provider: Claude's Messages API over one long-lived `AsyncAnthropic`.

The SDK does what it is good at: configuration, auth headers, the request, and the
status errors of the opening (`max_retries=0`: `open_with_retries` is our one retry
policy), over the shared `sdk_http_client` (tests inject an `httpx2.AsyncClient`). The
request is the SDK's `POST /v1/messages`, prepared once (`PreparedRequest`) and sent per
call with a msgspec-encoded body: `messages.create` would walk the body through its typed
transform each time (~0.6 ms of a request's ~1 ms CPU under `python -m bench`). The stream
itself is read as raw SSE bytes, not through `messages.stream(...)`: that helper builds a
pydantic event per SSE event and accumulates a full message snapshot
(`content.text += delta` on every `text_delta`, O(n²) in the answer's length; measured
43 µs per delta at 2,000 deltas, 67 µs at 60,000, against a flat ~3 µs here).
`sse.Decoder` splits the body into events, and one msgspec decoder per event
name reads only the fields we use. Event names not listed here (`ping`,
`content_block_start`, `content_block_stop`, any added later) are skipped, as Anthropic's
versioning policy asks; deltas other than `text_delta` (tool JSON, thinking, signatures,
citations) never enter `content`.

Wire details the contract leaves open:
- `temperature` is validated but not forwarded: `messages.create` of anthropic 2.12
  takes no `temperature` (nor `top_p`/`top_k`). `thinking_enabled` is not forwarded.
- Stop reasons: `end_turn`, `stop_sequence` → `stop`; `max_tokens`,
  `model_context_window_exceeded`, `pause_turn` (an unfinished turn) → `length`;
  `tool_use` → `tool_calls`; `refusal` → `content_filter`; anything else → `stop`.
- `prompt_tokens` counts every input token: `input_tokens` plus the cache reads and
  writes (Anthropic bills all three as input); `completion_tokens` is the cumulative
  `output_tokens` of the last `message_delta`.
- A mid-stream `event: error` (e.g. `overloaded_error`) ends the stream with an
  `upstream_error` carrying Anthropic's message.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import anthropic
import httpx2
import msgspec
from anthropic._models import FinalRequestOptions

from streamgate import sse
from streamgate.providers.base import ChunkStream, open_with_retries
from streamgate.errors import ProviderNotConfiguredError, UpstreamError
from streamgate.http_client import response_body, sdk_http_client
from streamgate.settings import Settings
from streamgate.providers.stainless import PreparedRequest, map_sdk_error, map_transport_error
from streamgate.chat_types import ChatMessage, ChatRequest, FinishReason, StreamChunk, Usage, json_encoder

PROVIDER = "anthropic"
KEY_ENV = "ANTHROPIC_API_KEY"
PUBLIC_BASE_URL = "https://api.anthropic.com"

STOP_REASONS: dict[str | None, FinishReason] = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "pause_turn": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "refusal": FinishReason.CONTENT_FILTER,
}


#: `max_tokens` when a request names none: the Messages API requires one, and it must
#: leave room for extended thinking plus the answer.
DEFAULT_MAX_TOKENS = 16384


# --- the request we send, and the events we read (only the fields we use) ----------------


class WireRequest(msgspec.Struct, omit_defaults=True):
    """The Messages API body: system messages joined into the top-level `system`."""

    model: str
    max_tokens: int
    messages: list[ChatMessage]
    stream: bool
    system: str | None = None

    @classmethod
    def of(cls, request: ChatRequest, model: str) -> WireRequest:
        turns = [m for m in request.messages if m.role != "system"]
        system = "\n\n".join(m.text for m in request.messages if m.role == "system")
        return cls(model, request.max_tokens or DEFAULT_MAX_TOKENS, turns, True, system or None)


# --- the events we read (only the fields we use; msgspec skips the rest) -----------------


class InputUsage(msgspec.Struct):
    """`usage` of `message_start` and `message_delta`: each count is cumulative, and a
    count a `message_delta` leaves out (`null` or absent) keeps its earlier value."""

    input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    output_tokens: int | None = None


class TokenCounts:
    """The latest value of each count one stream reported (per stream, not per event)."""

    __slots__ = ("input", "cache_creation", "cache_read", "output")

    def __init__(self) -> None:
        self.input = self.cache_creation = self.cache_read = self.output = 0

    def update(self, usage: InputUsage) -> None:
        if usage.input_tokens is not None:
            self.input = usage.input_tokens
        if usage.cache_creation_input_tokens is not None:
            self.cache_creation = usage.cache_creation_input_tokens
        if usage.cache_read_input_tokens is not None:
            self.cache_read = usage.cache_read_input_tokens
        if usage.output_tokens is not None:
            self.output = usage.output_tokens

    def total(self) -> Usage:
        """Prompt tokens count the cache writes and reads too (all are billed input)."""
        return Usage.of(self.input + self.cache_creation + self.cache_read, self.output)


class StartedMessage(msgspec.Struct):
    usage: InputUsage = msgspec.field(default_factory=InputUsage)


class MessageStart(msgspec.Struct):
    message: StartedMessage


class Delta(msgspec.Struct):
    type: str
    text: str = ""


class ContentBlockDelta(msgspec.Struct):
    delta: Delta


class StopDelta(msgspec.Struct):
    stop_reason: str | None = None


class MessageDelta(msgspec.Struct):
    delta: StopDelta
    usage: InputUsage = msgspec.field(default_factory=InputUsage)


class ErrorDetail(msgspec.Struct):
    type: str = "error"
    message: str = ""


class ErrorEvent(msgspec.Struct):
    error: ErrorDetail = msgspec.field(default_factory=ErrorDetail)


_delta_decoder = msgspec.json.Decoder(ContentBlockDelta)
_start_decoder = msgspec.json.Decoder(MessageStart)
_message_delta_decoder = msgspec.json.Decoder(MessageDelta)
_error_decoder = msgspec.json.Decoder(ErrorEvent)


class AnthropicStreamAdapter:
    name = PROVIDER
    default_model = "claude-sonnet-4-20250514"
    models = (
        default_model,
        "claude-sonnet-5-5",
        "claude-opus-5-5",
        "claude-haiku-5-5",
        "claude-sonnet-4-6",
    )

    def __init__(self, settings: Settings, http_client: httpx2.AsyncClient | None = None) -> None:
        self.max_retries = settings.upstream_max_retries
        self.configured = settings.anthropic_api_key is not None
        # The key and base URL are passed explicitly (an empty key when unset, never used:
        # `stream_chat` refuses first), so the SDK does not look for credentials elsewhere.
        self._client = anthropic.AsyncAnthropic(
            api_key=settings.anthropic_api_key or "",
            base_url=settings.anthropic_base_url or PUBLIC_BASE_URL,
            timeout=httpx2.Timeout(settings.upstream_timeout_s),
            max_retries=0,
            http_client=http_client or sdk_http_client(settings),
        )
        self._messages = PreparedRequest(
            self._client, FinalRequestOptions.construct(method="post", url="/v1/messages", content=b"")
        )

    async def stream_chat(self, request: ChatRequest) -> ChunkStream:
        if not self.configured:
            raise ProviderNotConfiguredError(f"anthropic is not configured; set {KEY_ENV}", provider=PROVIDER)
        model = request.model or self.default_model
        body = json_encoder.encode(WireRequest.of(request, model))
        response = await open_with_retries(lambda: self._open(body), max_retries=self.max_retries)
        chunks, release = response_body(response)
        return ChunkStream(read_chunks(chunks, model), release)

    async def _open(self, body: bytes) -> httpx2.Response:
        """One attempt: the response once Anthropic answered with its success status."""
        try:
            return await self._messages.send(body)
        except (anthropic.APIStatusError, anthropic.APIConnectionError, httpx2.RequestError) as error:
            raise map_sdk_error(
                error,
                provider=PROVIDER,
                key_env=KEY_ENV,
                status_error=anthropic.APIStatusError,
                timeout_error=anthropic.APITimeoutError,
                connection_error=anthropic.APIConnectionError,
            ) from None

    async def aclose(self) -> None:
        await self._client.close()


async def read_chunks(body: AsyncIterator[bytes], model: str) -> AsyncGenerator[StreamChunk, None]:
    """Anthropic's named SSE events → `StreamChunk`s; the final one after `message_stop`."""
    decoder = sse.Decoder()
    usage = TokenCounts()
    stop_reason: str | None = None
    try:
        async for data in body:
            for event in decoder.feed(data):
                if type(event) is not sse.Event:
                    continue  # a comment
                name = event.event
                if name == "content_block_delta":
                    delta = _delta_decoder.decode(event.data).delta
                    if delta.type == "text_delta" and delta.text:
                        yield StreamChunk(delta.text, None, model, PROVIDER)
                elif name == "message_delta":
                    message_delta = _message_delta_decoder.decode(event.data)
                    stop_reason = message_delta.delta.stop_reason or stop_reason
                    usage.update(message_delta.usage)
                elif name == "message_start":
                    usage.update(_start_decoder.decode(event.data).message.usage)
                elif name == "message_stop":
                    finish_reason = STOP_REASONS.get(stop_reason, FinishReason.STOP)
                    yield StreamChunk("", finish_reason, model, PROVIDER, usage.total())
                    await drain(body)
                    return
                elif name == "error":
                    raise stream_error(event.data)
    except msgspec.DecodeError:
        raise UpstreamError("anthropic sent malformed stream data", provider=PROVIDER) from None
    except httpx2.TransportError as error:
        raise map_transport_error(error, provider=PROVIDER) from None
    raise UpstreamError("anthropic ended the stream before message_stop", provider=PROVIDER)


async def drain(body: AsyncIterator[bytes]) -> None:
    """Read the rest of the body (its chunked end) so the connection goes back to the
    pool instead of being dropped; a failure there costs only its reuse, not the answer."""
    try:
        async for _ in body:
            pass
    except httpx2.HTTPError:
        pass


def stream_error(data: str) -> UpstreamError:
    """The `upstream_error` for Anthropic's mid-stream `event: error`, with its message."""
    try:
        detail = _error_decoder.decode(data).error
    except msgspec.DecodeError:
        return UpstreamError("anthropic reported an error mid-stream", provider=PROVIDER)
    return UpstreamError(f"anthropic failed mid-stream: {detail.message or detail.type} ({detail.type})", provider=PROVIDER)
