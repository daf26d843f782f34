"""The `anthropic` provider: Claude's Messages API over one long-lived `AsyncAnthropic`.

The SDK does what it is good at: configuration, auth headers, the request, and the
status errors of the opening (`max_retries=0`: `open_with_retries` is our one retry
policy), over the shared `sdk_http_client` (tests inject an `httpx2.AsyncClient`). The
request is the SDK's `POST /v1/messages`, prepared once (`AnthropicRequest`) and sent per
call with a msgspec-encoded body: `messages.create` would walk the body through its typed
transform each time. The stream itself is read as raw SSE bytes, not through
`messages.stream(...)`: that helper builds a pydantic event per SSE event and accumulates
a full message snapshot (`content.text += delta` on every `text_delta`, O(n²) in the
answer's length). The figures behind both choices are in docs/BENCHMARKS.md.
`sse.Decoder` splits the body into events, and one msgspec decoder per event
name reads only the fields we use. Event names not listed here (`ping`, any added later)
are skipped, as Anthropic's versioning policy asks. The request body is built in
`anthropic_request`.

Wire details the contract leaves open:
- `temperature` is validated but not forwarded: `messages.create` of the pinned SDK
  takes no `temperature` (nor `top_p`/`top_k`).
- Stop reasons: `end_turn`, `stop_sequence` → `stop`; `max_tokens`,
  `model_context_window_exceeded`, `pause_turn` (an unfinished turn) → `length`;
  `tool_use` → `tool_calls`; `refusal` → `content_filter`; anything else → `stop`.
- `prompt_tokens` counts every input token: `input_tokens` plus the cache reads and
  writes (Anthropic bills all three as input), which are also `cached_tokens`
  (`cache_read_input_tokens`) and `cache_creation_tokens` when not zero; `completion_tokens` is the cumulative
  `output_tokens` of the last `message_delta`; `reasoning_tokens` its
  `output_tokens_details.thinking_tokens`, when sent.
- A `tool_use` block that streams no arguments is a call with arguments `{}`.
- A mid-stream `event: error` (e.g. `overloaded_error`) ends the stream with an
  `upstream_error` carrying Anthropic's message.
- With `include_reasoning`, a thinking block's `signature_delta` is a `SignatureChunk`
  (after the block's reasoning), and a `redacted_thinking` block a `SignatureChunk` of
  its `data` marked `anthropic_request.REDACTED_SIGNATURE`: dialects keep it as they keep
  any signature, and a `ThinkingPart` sent back with it is that redacted block again.
  Without `include_reasoning` neither goes out (a signature without its thinking text
  could not be sent back).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import anthropic
import httpx2
import msgspec
from anthropic._models import FinalRequestOptions

from .. import keys, sse
from ..adapter import ChunkStream, default_first, open_with_retries
from ..chat_types import (
    ChatRequest,
    Chunk,
    FinishReason,
    ReasoningChunk,
    SignatureChunk,
    StreamChunk,
    ToolCallChunk,
    Usage,
    json_encoder,
)
from ..errors import ProviderNotConfiguredError, UpstreamError
from ..providers.anthropic_request import PROVIDER, REDACTED_SIGNATURE, WireRequest
from ..providers.stainless import AnthropicRequest, map_sdk_error
from ..settings import Settings
from ..upstream_http import response_body, sdk_http_client
from .stream_reader import END, Ending, EventReader, read

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


# --- the events we read (only the fields we use; msgspec skips the rest) -----------------


class InputUsage(msgspec.Struct):
    """`usage` of `message_start` and `message_delta`: each count is cumulative, and a
    count a `message_delta` leaves out (`null` or absent) keeps its earlier value."""

    input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    output_tokens: int | None = None
    output_tokens_details: OutputDetails | None = None


class OutputDetails(msgspec.Struct):
    thinking_tokens: int | None = None  # part of `output_tokens`


class TokenCounts:
    """The latest value of each count one stream reported (per stream, not per event)."""

    __slots__ = ("input", "cache_creation", "cache_read", "output", "thinking")

    def __init__(self) -> None:
        self.input = self.cache_creation = self.cache_read = self.output = 0
        self.thinking: int | None = None

    def update(self, usage: InputUsage) -> None:
        if usage.input_tokens is not None:
            self.input = usage.input_tokens
        if usage.cache_creation_input_tokens is not None:
            self.cache_creation = usage.cache_creation_input_tokens
        if usage.cache_read_input_tokens is not None:
            self.cache_read = usage.cache_read_input_tokens
        if usage.output_tokens is not None:
            self.output = usage.output_tokens
        details = usage.output_tokens_details
        if details is not None and details.thinking_tokens is not None:
            self.thinking = details.thinking_tokens

    def total(self) -> Usage:
        """Prompt tokens count the cache writes and reads too (all are billed input); each of
        those also on its own, when not zero."""
        prompt = self.input + self.cache_creation + self.cache_read
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=self.output,
            total_tokens=prompt + self.output,
            reasoning_tokens=self.thinking,
            cached_tokens=self.cache_read or None,
            cache_creation_tokens=self.cache_creation or None,
        )


class StartedMessage(msgspec.Struct):
    usage: InputUsage = msgspec.field(default_factory=InputUsage)


class MessageStart(msgspec.Struct):
    message: StartedMessage


class Delta(msgspec.Struct):
    type: str
    text: str = ""  # text_delta
    thinking: str = ""  # thinking_delta
    signature: str = ""  # signature_delta
    partial_json: str = ""  # input_json_delta


class ContentBlockDelta(msgspec.Struct):
    delta: Delta
    index: int = 0


class ContentBlock(msgspec.Struct):
    type: str
    id: str = ""  # tool_use
    name: str = ""  # tool_use
    data: str = ""  # redacted_thinking


class ContentBlockStart(msgspec.Struct):
    index: int
    content_block: ContentBlock


class ContentBlockStop(msgspec.Struct):
    index: int


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
_block_start_decoder = msgspec.json.Decoder(ContentBlockStart)
_block_stop_decoder = msgspec.json.Decoder(ContentBlockStop)
_message_delta_decoder = msgspec.json.Decoder(MessageDelta)
_error_decoder = msgspec.json.Decoder(ErrorEvent)


#: The contract's default: the newest Sonnet the pinned SDK's model literal lists and its
#: `DEPRECATED_MODELS` does not name.
DEFAULT_MODEL = "claude-sonnet-5-5"

#: Today's models of the SDK's `Model` literal, newest line first, deprecated ones left out.
MODELS = (
    DEFAULT_MODEL,
    "claude-opus-5-5",
    "claude-haiku-5-5",
    "claude-fable-5-2",
    "claude-mythos-5-2",
    "claude-opus-4-8",
    "claude-sonnet-4-6",
    "claude-haiku-4-5",
)


class AnthropicStreamAdapter:
    name = PROVIDER

    def __init__(self, settings: Settings, http_client: httpx2.AsyncClient | None = None) -> None:
        self.max_retries = settings.upstream_max_retries
        self.configured = keys.first_key(settings.anthropic_api_key) is not None
        self.default_model = settings.anthropic_default_model or DEFAULT_MODEL
        self.models = default_first(self.default_model, MODELS)
        # The key and base URL are passed explicitly (an empty key when unset, never used:
        # `stream_chat` refuses first), so the SDK does not look for credentials elsewhere.
        self._client = anthropic.AsyncAnthropic(
            api_key=keys.first_key(settings.anthropic_api_key) or "",
            base_url=settings.anthropic_base_url or PUBLIC_BASE_URL,
            timeout=httpx2.Timeout(settings.upstream_timeout_s),
            max_retries=0,
            http_client=http_client or sdk_http_client(settings),
        )
        keys.attach(self._client, PROVIDER, settings.anthropic_api_key, settings.redis_url)
        self._messages = AnthropicRequest(
            self._client, FinalRequestOptions.construct(method="post", url="/v1/messages", content=b"")
        )

    async def stream_chat(self, request: ChatRequest) -> ChunkStream:
        if not self.configured:
            raise ProviderNotConfiguredError(f"anthropic is not configured; set {KEY_ENV}", provider=PROVIDER)
        model = request.model or self.default_model
        body = json_encoder.encode(WireRequest.of(request, model))
        response = await open_with_retries(lambda: self._open(body), max_retries=self.max_retries)
        chunks, release = response_body(response)
        return ChunkStream(read_chunks(chunks, model, request.include_reasoning), release)

    async def list_models(self) -> list[str]:
        """The ids `GET /v1/models` names, every page of them, but retired ones (the API keeps
        those in its catalogue as a record; a request naming one fails)."""
        return [
            model.id
            async for model in self._client.models.list(limit=1000)
            if getattr(model, "lifecycle", None) != "retired"
        ]

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


def read_chunks(body: AsyncIterator[bytes], model: str, include_reasoning: bool = False) -> AsyncGenerator[Chunk, None]:
    """Anthropic's named SSE events → chunks (`MessageEvents`); the final one after
    `message_stop`."""
    return read(body, MessageEvents(model, include_reasoning))


class MessageEvents(EventReader):
    """The events of one Messages stream. Text deltas are content; thinking deltas are
    reasoning (when asked for); a `tool_use` block is a call, numbered 0, 1, … in the order
    the calls begin (not by block index, which counts text and thinking blocks too), its
    `input_json_delta` fragments the arguments. Signatures and redacted thinking are
    `SignatureChunk`s (when reasoning is asked for); citations are dropped. Usage and the
    stop reason are kept for the final chunk, after `message_stop`."""

    __slots__ = ("model", "include_reasoning", "usage", "stop_reason", "calls", "no_arguments")

    def __init__(self, model: str, include_reasoning: bool = False) -> None:
        super().__init__(PROVIDER)
        self.model = model
        self.include_reasoning = include_reasoning
        self.usage = TokenCounts()
        self.stop_reason: str | None = None
        self.calls: dict[int, int] = {}  # a tool_use block's index → its call index
        self.no_arguments: set[int] = set()  # tool_use blocks that sent no arguments yet

    def on_event(self, event: sse.Event) -> Chunk | Ending | None:
        if event.event != "content_block_delta":
            return self.on_message_event(event.event, event.data)
        block_delta = _delta_decoder.decode(event.data)
        delta = block_delta.delta
        kind = delta.type
        if kind == "text_delta":
            return StreamChunk(delta.text, None, self.model, PROVIDER) if delta.text else None
        if kind == "input_json_delta":
            return self.arguments(block_delta.index, delta.partial_json)
        if not self.include_reasoning:
            return None
        if kind == "thinking_delta" and delta.thinking:
            return ReasoningChunk(delta.thinking, self.model, PROVIDER)
        if kind == "signature_delta" and delta.signature:
            return SignatureChunk(signature=delta.signature)
        return None

    def arguments(self, index: int, partial_json: str) -> ToolCallChunk | None:
        call = self.calls.get(index)
        if not partial_json or call is None:
            return None
        self.no_arguments.discard(index)
        return ToolCallChunk(call, None, None, partial_json)

    def on_message_event(self, name: str, data: str) -> Chunk | Ending | None:
        """Any event but a content delta: blocks starting and stopping, the message's
        start, delta (stop reason, usage) and stop, a mid-stream error."""
        if name == "content_block_start":
            return self.block_start(_block_start_decoder.decode(data))
        if name == "content_block_stop":
            return self.block_stop(data) if self.no_arguments else None
        if name == "message_delta":
            message_delta = _message_delta_decoder.decode(data)
            self.stop_reason = message_delta.delta.stop_reason or self.stop_reason
            self.usage.update(message_delta.usage)
        elif name == "message_start":
            self.usage.update(_start_decoder.decode(data).message.usage)
        elif name == "message_stop":
            return END
        elif name == "error":
            raise stream_error(data)
        return None

    def block_start(self, start: ContentBlockStart) -> Chunk | None:
        block = start.content_block
        if block.type == "tool_use":
            call = self.calls[start.index] = len(self.calls)
            self.no_arguments.add(start.index)
            return ToolCallChunk(call, block.id, block.name, "")
        if block.type == "redacted_thinking" and self.include_reasoning and block.data:
            return SignatureChunk(signature=REDACTED_SIGNATURE + block.data)
        return None

    def block_stop(self, data: str) -> ToolCallChunk | None:
        index = _block_stop_decoder.decode(data).index
        if index not in self.no_arguments:
            return None
        self.no_arguments.discard(index)  # a call without arguments: its input is `{}`
        return ToolCallChunk(self.calls[index], arguments="{}")

    def final(self, ended: bool) -> StreamChunk:
        if not ended:
            raise UpstreamError("anthropic ended the stream before message_stop", provider=PROVIDER)
        finish_reason = STOP_REASONS.get(self.stop_reason, FinishReason.STOP)
        return StreamChunk("", finish_reason, self.model, PROVIDER, self.usage.total())

    def malformed(self, error: msgspec.DecodeError) -> UpstreamError:
        return UpstreamError("anthropic sent malformed stream data", provider=PROVIDER)


def stream_error(data: str) -> UpstreamError:
    """The `upstream_error` for Anthropic's mid-stream `event: error`, with its message."""
    try:
        detail = _error_decoder.decode(data).error
    except msgspec.DecodeError:
        return UpstreamError("anthropic reported an error mid-stream", provider=PROVIDER)
    return UpstreamError(
        f"anthropic failed mid-stream: {detail.message or detail.type} ({detail.type})", provider=PROVIDER
    )
