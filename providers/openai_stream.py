"""The `openai` provider: Chat Completions streaming through `openai.AsyncOpenAI`.

The SDK does what it is good at — configuration, auth, building and sending the request,
turning an error status into an exception. We skip what costs CPU per request and per
chunk: the body is a msgspec-encoded Struct sent through the request the SDK built once
(`OpenAIRequest`: no typed transform), which returns the raw `httpx2.Response` once its
status was checked (`stream=True`, nothing read yet); its bytes go through `sse.Decoder`
and one msgspec decoder of a minimal chunk Struct. Llama 4 on Together speaks the same
wire and reuses all of this (`providers/llama4_stream.py`).

The request's OpenAI-shaped fields (content parts, `tools`, `tool_choice`, assistant
`tool_calls`, `tool` messages, `stop`, `response_format`) are encoded as they are. What
differs per model: the length limit goes as `max_completion_tokens` (reasoning models refuse
`max_tokens`), and `reasoning_effort` only to a model that reasons. In the stream,
`delta.tool_calls` become `ToolCallChunk`s and a `reasoning` / `reasoning_content` delta
(OpenAI-compatible servers; OpenAI sends none on Chat Completions) a `ReasoningChunk`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator

import httpx2
import msgspec
import openai
from openai._models import FinalRequestOptions
from openai._types import Headers, RequestOptions

from .. import sse
from ..adapter import ChunkStream, open_with_retries
from ..errors import GatewayError, ProviderNotConfiguredError, UpstreamError
from ..upstream_http import response_body, sdk_http_client
from ..settings import Settings
from ..providers.stainless import OpenAIRequest, map_sdk_error, map_transport_error
from ..chat_types import (
    Chunk,
    ChatMessage,
    ChatRequest,
    FinishReason,
    ReasoningChunk,
    ReasoningEffort,
    ResponseFormat,
    StreamChunk,
    Tool,
    ToolCallChunk,
    ToolChoice,
    Usage,
    json_encoder,
)

OPENAI_BASE_URL = "https://api.openai.com/v1"
OPENAI_DEFAULT_MODEL = "gpt-4o"
#: The built-in list (the default first): the chat models of the pinned SDK's `ChatModel`
#: that are current (no dated snapshots, none announced to shut down within weeks).
OPENAI_MODELS = (
    OPENAI_DEFAULT_MODEL, "gpt-6.2-sol", "gpt-6.2-astra", "gpt-6.1-sol", "gpt-6.1-terra", "gpt-6-sol",
    "gpt-6-astra", "gpt-6-luna", "gpt-5.6-sol", "gpt-5.6-terra", "gpt-5.6-luna", "gpt-5.5", "gpt-5.4",
    "gpt-5.4-mini", "gpt-5.2", "gpt-4.1", "gpt-4.1-mini", "gpt-4o-mini",
)
#: Models that reason (and take `reasoning_effort`): the o-series and GPT-5 onwards, also
#: fine-tuned (`ft:o4-mini:…`); not the `*-chat-latest` aliases, which take no effort.
REASONING_MODEL = re.compile(r"(?:ft:)?(?!.*-chat-latest$)(?:o[1-9]|gpt-(?:[5-9]|[1-9][0-9]))(?:[.:-]|$)")
#: `GET /models` ids Chat Completions serves: GPT and o-series text models (also
#: fine-tuned), not the audio, realtime, speech, transcription, image, embedding,
#: completions-only or Responses-only ones.
CHAT_MODEL = re.compile(
    r"(?:ft:)?(?:gpt-|o[1-9]|chatgpt-)(?!.*(?:audio|realtime|transcribe|tts|image|embedding|instruct|codex|-pro\b))"
)
#: `reasoning_effort` for `thinking_enabled: true` without an explicit effort (every
#: reasoning model takes it; some default to `none`).
THINKING_EFFORT: ReasoningEffort = "medium"

#: Upstream finish reasons → ours. OpenAI's pass through; Together ends with `eos`.
#: A reason not listed here ends the stream as `stop` (the contract allows no others).
FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "eos": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "content_filter": FinishReason.CONTENT_FILTER,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
}

#: Sent as the key when none is configured, so the SDK can be built once at start-up;
#: `stream_chat` refuses before any request, so it never reaches the network.
_NO_KEY = "unset"


# --- the wire: the request we send, and a `chat.completion.chunk` (only what we read) -----


class _StreamOptions(msgspec.Struct):
    include_usage: bool = True


class _WireRequest(msgspec.Struct, omit_defaults=True):
    """The Chat Completions body, encoded by msgspec and sent by `OpenAIRequest` (the
    SDK still builds, authenticates and sends the request and raises its status
    errors); `chat.completions.create` would first walk it through the SDK's typed
    transform, which cost more CPU than the rest of the request (see `bench/`).
    Unset fields are omitted. This is the OpenAI-compatible servers' body (Together):
    the length limit as `max_tokens`."""

    model: str
    messages: list[ChatMessage]
    stream: bool
    stream_options: _StreamOptions
    temperature: float | None = None
    max_tokens: int | None = None
    reasoning_effort: ReasoningEffort | None = None
    stop: str | list[str] | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None


class _OpenAIRequest(_WireRequest):
    """OpenAI's body: the length limit as `max_completion_tokens`, which every chat model
    takes (reasoning models refuse `max_tokens`)."""

    max_tokens: int | None = msgspec.field(default=None, name="max_completion_tokens")


class _FunctionDelta(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCallDelta(msgspec.Struct):
    """A piece of a streamed call: `id`, `function.name` on its first delta, then
    `function.arguments` fragments; `index` tells the calls apart."""

    index: int = 0
    id: str | None = None
    function: _FunctionDelta | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None  # DeepSeek, vLLM
    reasoning: str | None = None  # Together, vLLM, OpenRouter
    tool_calls: list[_ToolCallDelta] | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _CompletionTokensDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class _WireUsage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int | None = None
    completion_tokens_details: _CompletionTokensDetails | None = None
    prompt_tokens_details: _PromptTokensDetails | None = None


class _PromptTokensDetails(msgspec.Struct):
    cached_tokens: int | None = None  # part of `prompt_tokens`


class _WireError(msgspec.Struct):
    message: str = ""


class _WireChunk(msgspec.Struct):
    """One `data:` payload. `model` and `id` are not read: frames carry the requested
    model (as the contract's example and the error frames do), and skipping unknown
    fields is cheaper than decoding them."""

    choices: list[_Choice] = []
    usage: _WireUsage | None = None
    error: _WireError | str | None = None


class _ModelCard(msgspec.Struct):
    id: str


class _ModelPage(msgspec.Struct):
    data: list[_ModelCard]


_chunk_decoder = msgspec.json.Decoder(_WireChunk)
#: `GET /models`: OpenAI's `{"object": "list", "data": [...]}`, or Together's bare array.
_models_decoder = msgspec.json.Decoder(_ModelPage | list[_ModelCard])
_STREAM_OPTIONS = _StreamOptions()


# --- the adapter ------------------------------------------------------------------------


class OpenAIStreamAdapter:
    """One long-lived `AsyncOpenAI`; `stream_chat` opens one Chat Completions stream.

    Each upstream call carries an `X-Request-Id` (fresh per stream, the same across its
    retries) as a per-request header option: the SDK's `default_headers` are
    fixed when the client is built, and a client per request (`with_options`) is what
    we must not do.
    """

    name = "openai"
    key_env = "OPENAI_API_KEY"
    #: The body type: how this upstream takes the length limit.
    _request_type: type[_WireRequest] = _OpenAIRequest

    def __init__(self, settings: Settings, *, http_client: httpx2.AsyncClient | None = None) -> None:
        api_key, base_url = self._key_and_base_url(settings)
        self.configured = api_key is not None
        self.default_model, self.models = self._default_and_models(settings)
        self._max_retries = settings.upstream_max_retries
        self._client = openai.AsyncOpenAI(
            api_key=api_key or _NO_KEY,
            base_url=base_url,
            timeout=httpx2.Timeout(settings.upstream_timeout_s),
            max_retries=0,  # ours: `open_with_retries`, the same policy for every provider
            http_client=http_client or sdk_http_client(settings),
        )
        self._chat = OpenAIRequest(
            self._client, FinalRequestOptions.construct(method="post", url="/chat/completions", content=b"")
        )
        self._chat.headers = self._upstream_headers(self._chat.headers, api_key or _NO_KEY)
        self._list_options: RequestOptions = {"headers": self._list_headers(api_key or _NO_KEY)}

    @staticmethod
    def _key_and_base_url(settings: Settings) -> tuple[str | None, str]:
        return settings.openai_api_key, settings.openai_base_url or OPENAI_BASE_URL

    @staticmethod
    def _default_and_models(settings: Settings) -> tuple[str, tuple[str, ...]]:
        """The default model (`OPENAI_DEFAULT_MODEL`, else the contract's) and the built-in
        list, the default first."""
        default = settings.openai_default_model or OPENAI_DEFAULT_MODEL
        return default, (default, *(model for model in OPENAI_MODELS if model != default))

    @staticmethod
    def _upstream_headers(headers: list[tuple[bytes, bytes]], api_key: str) -> list[tuple[bytes, bytes]]:
        """The SDK's headers as this upstream gets them (OpenAI: all of them)."""
        return headers

    def _list_headers(self, api_key: str) -> Headers:
        """Header changes for `GET /models` (OpenAI: none)."""
        return {}

    def check_model(self, model: str) -> None:
        """Refuse a model before any network call (OpenAI: any name goes upstream)."""

    @staticmethod
    def reasoning_effort(request: ChatRequest, model: str) -> ReasoningEffort | None:
        """`reasoning_effort` (else `thinking_enabled` → `THINKING_EFFORT`), for a model
        that reasons; `None` (nothing sent) otherwise."""
        effort = request.reasoning_effort
        if effort is None:
            if not request.thinking_enabled:
                return None
            effort = THINKING_EFFORT
        return effort if REASONING_MODEL.match(model) else None

    async def stream_chat(self, request: ChatRequest) -> ChunkStream:
        model = request.model or self.default_model
        self.check_model(model)
        if not self.configured:
            raise ProviderNotConfiguredError(f"{self.name} is not configured; set {self.key_env}", provider=self.name)
        body = json_encoder.encode(self._request_type(
            model, request.messages, True, _STREAM_OPTIONS, request.temperature, request.max_tokens,
            self.reasoning_effort(request, model), request.stop, request.response_format, request.tools,
            request.tool_choice,
        ))
        headers = ((b"x-request-id", uuid.uuid4().hex.encode()),)

        async def open_once() -> httpx2.Response:
            try:
                return await self._chat.send(body, headers)
            except (openai.APIStatusError, openai.APIConnectionError, httpx2.RequestError) as error:
                raise self._gateway_error(error) from None

        body, release = response_body(await open_with_retries(open_once, max_retries=self._max_retries))
        return ChunkStream(self._chunks(body, model, request.include_reasoning), release)

    async def list_models(self) -> list[str]:
        """`GET /models` through the SDK's own `get` (not `models.list()`: its page type
        cannot read Together's bare array), keeping the chat models this adapter serves."""
        try:
            body = await self._client.get("/models", cast_to=bytes, options=self._list_options)
            cards = _models_decoder.decode(body)
        except (openai.APIStatusError, openai.APIConnectionError, httpx2.RequestError) as error:
            raise self._gateway_error(error) from None
        except msgspec.DecodeError:
            raise UpstreamError(f"malformed model list from {self.name}", provider=self.name) from None
        return self.chat_models([card.id for card in (cards.data if type(cards) is _ModelPage else cards)])

    @staticmethod
    def chat_models(ids: list[str]) -> list[str]:
        """The ids of a model list this adapter can chat with (OpenAI: `CHAT_MODEL`)."""
        return [model for model in ids if CHAT_MODEL.match(model)]

    def _gateway_error(self, error: Exception) -> GatewayError:
        return map_sdk_error(
            error,
            provider=self.name,
            key_env=self.key_env,
            status_error=openai.APIStatusError,
            timeout_error=openai.APITimeoutError,
            connection_error=openai.APIConnectionError,
        )

    async def _chunks(
        self, byte_chunks: AsyncIterator[bytes], model: str, include_reasoning: bool
    ) -> AsyncGenerator[Chunk, None]:
        """Content (and reasoning, tool-call) chunks as they arrive, then ONE final chunk
        with the finish reason and the usage (OpenAI sends the usage in a later chunk with
        empty `choices`).

        After `data: [DONE]` the rest of the body is read to its end, so the connection
        goes back to the pool instead of being dropped (a new TLS handshake next time).
        """
        provider = self.name
        finish_reason: FinishReason | None = None
        usage: Usage | None = None
        calls: _ToolCalls | None = None
        decoder = sse.Decoder()
        done = False
        try:
            async for raw in byte_chunks:
                for event in decoder.feed(raw):
                    if type(event) is not sse.Event:
                        continue  # a comment
                    if event.data == "[DONE]":
                        done = True
                        break
                    try:
                        chunk = _chunk_decoder.decode(event.data)
                    except msgspec.DecodeError:
                        raise UpstreamError(f"malformed upstream data from {provider}", provider=provider) from None
                    if chunk.error is not None:
                        raise _stream_error(chunk.error, provider)
                    if chunk.choices:
                        choice = chunk.choices[0]
                        delta = choice.delta
                        if delta is not None:
                            if include_reasoning and (delta.reasoning_content or delta.reasoning):
                                # servers that send both fields send the same text in each
                                yield ReasoningChunk(delta.reasoning_content or delta.reasoning, model, provider)
                            if delta.content:
                                yield StreamChunk(delta.content, None, model, provider)
                            if delta.tool_calls:
                                if calls is None:
                                    calls = _ToolCalls()
                                for call in delta.tool_calls:
                                    piece = calls.piece(call)
                                    if piece is not None:
                                        yield piece
                        if choice.finish_reason is not None:
                            finish_reason = FINISH_REASONS.get(choice.finish_reason, FinishReason.STOP)
                    if chunk.usage is not None:
                        usage = _usage(chunk.usage)
                if done:
                    break
        except (httpx2.RequestError, sse.LineTooLongError) as error:  # a reset, a timeout, bad gzip, an endless line
            raise map_transport_error(error, provider=provider) from None
        if finish_reason is None:
            raise UpstreamError(f"{provider} ended the stream without a finish reason", provider=provider)
        if calls is not None and finish_reason is FinishReason.STOP:
            finish_reason = FinishReason.TOOL_CALLS  # OpenAI ends a call forced by `tool_choice` with `stop`
        yield StreamChunk("", finish_reason, model, provider, usage)
        if done:
            await _drain(byte_chunks)

    async def aclose(self) -> None:
        await self._client.close()


class _ToolCalls:
    """The calls of one stream: each upstream call's index in ours (0, 1, … in the order
    the calls began; normally the upstream's own). A delta with a new `id` at an index
    already seen starts a new call (servers that number every call 0)."""

    __slots__ = ("_ours", "_began")

    def __init__(self) -> None:
        self._ours: dict[int, tuple[int, str]] = {}  # upstream index → (our index, call id)
        self._began = 0

    def piece(self, delta: _ToolCallDelta) -> ToolCallChunk | None:
        """The chunk for one `delta.tool_calls` entry (`None`: nothing new in it)."""
        function = delta.function
        arguments = function.arguments if function is not None else None
        known = self._ours.get(delta.index)
        if known is None or (delta.id is not None and delta.id != known[1]):
            call_id = delta.id or "call_" + uuid.uuid4().hex[:24]
            index = self._began
            self._began += 1
            self._ours[delta.index] = (index, call_id)
            name = function.name if function is not None else None
            return ToolCallChunk(index, call_id, name or "", arguments or "")
        if arguments:
            return ToolCallChunk(known[0], None, None, arguments)
        return None


def _usage(wire: _WireUsage) -> Usage:
    total = wire.total_tokens
    if total is None:
        total = wire.prompt_tokens + wire.completion_tokens
    details = wire.completion_tokens_details
    reasoning = details.reasoning_tokens if details is not None and details.reasoning_tokens else None
    cached = wire.prompt_tokens_details.cached_tokens if wire.prompt_tokens_details is not None else None
    return Usage(wire.prompt_tokens, wire.completion_tokens, total, reasoning, cached or None)


def _stream_error(error: _WireError | str, provider: str) -> UpstreamError:
    message = error if isinstance(error, str) else error.message
    return UpstreamError(f"{provider} failed mid-stream: {message or 'unknown error'}", provider=provider)


async def _drain(byte_chunks: AsyncIterator[bytes]) -> None:
    """Read what follows `[DONE]` (the end of the chunked body, bounded by the read
    timeout); a failure there costs only the connection's reuse, never the answer."""
    try:
        async for _ in byte_chunks:
            pass
    except httpx2.HTTPError:
        pass
