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
(OpenAI-compatible servers; OpenAI sends none on Chat Completions) a `ReasoningChunk`;
`prompt_tokens_details.cached_tokens` the usage's `cached_tokens`.

OpenAI streams reasoning text only on its Responses API: a request with
`include_reasoning` to a reasoning model goes there instead (`uses_responses_api`;
`providers/openai_responses.py` translates both ways). Every other request takes the
Chat Completions path above, unchanged. `open_responses` is the Responses API's raw
door, shared with the `/v1/responses` passthrough.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable

import httpx2
import msgspec
import openai
from openai._models import FinalRequestOptions
from openai._types import Headers, RequestOptions

from .. import keys, sse
from ..adapter import ChunkStream, default_first, open_with_retries
from ..chat_types import (
    ChatMessage,
    ChatRequest,
    Chunk,
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
from ..errors import GatewayError, ProviderNotConfiguredError, UpstreamError
from ..providers import openai_responses
from ..providers.stainless import OpenAIRequest, PreparedRequest, map_sdk_error
from ..settings import Settings
from ..upstream_http import response_body, sdk_http_client
from .stream_reader import END, Ending, EventReader, read

OPENAI_BASE_URL = "https://api.openai.com/v1"
OPENAI_DEFAULT_MODEL = "gpt-4o"
#: The built-in list (the default first): the chat models of the pinned SDK's `ChatModel`
#: that are current (no dated snapshots, none announced to shut down within weeks).
OPENAI_MODELS = (
    OPENAI_DEFAULT_MODEL,
    "gpt-6.2-sol",
    "gpt-6.2-astra",
    "gpt-6.1-sol",
    "gpt-6.1-terra",
    "gpt-6-sol",
    "gpt-6-astra",
    "gpt-6-luna",
    "gpt-5.6-sol",
    "gpt-5.6-terra",
    "gpt-5.6-luna",
    "gpt-5.5",
    "gpt-5.4",
    "gpt-5.4-mini",
    "gpt-5.2",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4o-mini",
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
#
# What is decoded from the stream (`_WireChunk` and below) is made with `gc=False`: one
# decode per upstream event makes several of them, they never hold a cycle, and the
# collector need not track them (cheaper to make).


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
    top_p: float | None = None


class _OpenAIRequest(_WireRequest):
    """OpenAI's body: the length limit as `max_completion_tokens`, which every chat model
    takes (reasoning models refuse `max_tokens`)."""

    max_tokens: int | None = msgspec.field(default=None, name="max_completion_tokens")


class _FunctionDelta(msgspec.Struct, gc=False):
    name: str | None = None
    arguments: str | None = None


class _ToolCallDelta(msgspec.Struct, gc=False):
    """A piece of a streamed call: `id`, `function.name` on its first delta, then
    `function.arguments` fragments; `index` tells the calls apart."""

    index: int = 0
    id: str | None = None
    function: _FunctionDelta | None = None


class _Delta(msgspec.Struct, gc=False):
    content: str | None = None
    reasoning_content: str | None = None  # DeepSeek, vLLM
    reasoning: str | None = None  # Together, vLLM, OpenRouter
    tool_calls: list[_ToolCallDelta] | None = None


class _Choice(msgspec.Struct, gc=False):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _CompletionTokensDetails(msgspec.Struct, gc=False):
    reasoning_tokens: int | None = None


class _PromptTokensDetails(msgspec.Struct, gc=False):
    cached_tokens: int | None = None


class _WireUsage(msgspec.Struct, gc=False):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int | None = None
    completion_tokens_details: _CompletionTokensDetails | None = None
    prompt_tokens_details: _PromptTokensDetails | None = None


class _WireError(msgspec.Struct, gc=False):
    message: str = ""


class _WireChunk(msgspec.Struct, gc=False):
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
    #: Whether the upstream serves the Responses API (OpenAI does; Together does not).
    has_responses_api = True

    def __init__(self, settings: Settings, *, http_client: httpx2.AsyncClient | None = None) -> None:
        keys_value, base_url = self._key_and_base_url(settings)
        api_key = keys.first_key(keys_value)
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
        keys.attach(self._client, self.name, keys_value, settings.redis_url)
        self._chat = OpenAIRequest(
            self._client, FinalRequestOptions.construct(method="post", url="/chat/completions", content=b"")
        )
        self._chat.headers = self._upstream_headers(self._chat.headers, api_key or _NO_KEY)
        self._responses = OpenAIRequest(
            self._client, FinalRequestOptions.construct(method="post", url="/responses", content=b"")
        )
        self._responses.headers = self._upstream_headers(self._responses.headers, api_key or _NO_KEY)
        self._list_options: RequestOptions = {"headers": self._list_headers(api_key or _NO_KEY)}

    @staticmethod
    def _key_and_base_url(settings: Settings) -> tuple[str | None, str]:
        return settings.openai_api_key, settings.openai_base_url or OPENAI_BASE_URL

    @staticmethod
    def _default_and_models(settings: Settings) -> tuple[str, tuple[str, ...]]:
        """The default model (`OPENAI_DEFAULT_MODEL`, else the contract's) and the built-in
        list, the default first."""
        default = settings.openai_default_model or OPENAI_DEFAULT_MODEL
        return default, default_first(default, OPENAI_MODELS)

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

    def uses_responses_api(self, request: ChatRequest, model: str) -> bool:
        """Whether `request` goes to the upstream's Responses API: it asks for reasoning
        text (`include_reasoning`), which OpenAI streams only there, from a model that
        reasons (`REASONING_MODEL`) and is not told not to (`reasoning_effort: none`), and
        asks nothing the Responses API lacks (`stop`: that request goes to Chat Completions
        as before, and the upstream decides)."""
        return (
            request.include_reasoning
            and self.has_responses_api
            and request.reasoning_effort != "none"
            and request.stop is None
            and REASONING_MODEL.match(model) is not None
        )

    async def stream_chat(self, request: ChatRequest) -> ChunkStream:
        model = request.model or self.default_model
        self.check_model(model)
        self._require_key()
        if self.uses_responses_api(request, model):
            return await openai_responses.stream_chat(self, request, model)
        body = json_encoder.encode(
            self._request_type(
                model,
                request.messages,
                True,
                _STREAM_OPTIONS,
                request.temperature,
                request.max_tokens,
                self.reasoning_effort(request, model),
                request.stop,
                request.response_format,
                request.tools,
                request.tool_choice,
                request.top_p,
            )
        )
        chunks, release = response_body(await self._send(self._chat, body))
        return ChunkStream(self._chunks(chunks, model, request.include_reasoning), release)

    async def open_responses(
        self,
        body: bytes,
        headers: Iterable[tuple[bytes, bytes]] = (),
        *,
        method: str = "POST",
        path: str = "/responses",
        keep_error_body: bool = False,
    ) -> tuple[AsyncIterator[bytes], Callable[[], Awaitable[None]]]:
        """One call to the upstream's Responses API (`method` on `path` under the base URL,
        which may carry a query), sent as `_send` sends: the body's bytes as they arrive
        and how to let the response go. `keep_error_body`: an error status's mapped error
        carries the upstream's (bounded) body, for a passthrough to answer with."""
        self._require_key()
        prepared = self._responses
        url = None if path == "/responses" else prepared.url_for(path)
        response = await self._send(prepared, body, headers, method=method, url=url, keep_error_body=keep_error_body)
        return response_body(response)

    def _require_key(self) -> None:
        if not self.configured:
            raise ProviderNotConfiguredError(f"{self.name} is not configured; set {self.key_env}", provider=self.name)

    async def _send(
        self,
        prepared: PreparedRequest,
        body: bytes,
        headers: Iterable[tuple[bytes, bytes]] = (),
        *,
        method: str = "POST",
        url: httpx2.URL | None = None,
        keep_error_body: bool = False,
    ) -> httpx2.Response:
        """`body` through a request the SDK prepared (its auth and headers), plus `headers`
        and an `X-Request-Id` fresh per call and the same across its retries, under our
        retry policy (`open_with_retries`): the response once its status is a `2xx`, else
        the contract's error."""
        sent = [(b"x-request-id", b"%032x" % random.getrandbits(128)), *headers]  # 32 hex digits, as a UUID's
        try:  # the first attempt without a closure and the retry loop's coroutine: it mostly succeeds
            return await self._send_once(prepared, body, sent, method, url, keep_error_body)
        except GatewayError as error:
            if not error.retryable or self._max_retries <= 0:
                raise
            first_failure: GatewayError | None = error

        async def open_once() -> httpx2.Response:
            nonlocal first_failure
            if first_failure is not None:  # the first attempt's failure, given to the retry loop as its own
                failure, first_failure = first_failure, None
                raise failure
            return await self._send_once(prepared, body, sent, method, url, keep_error_body)

        return await open_with_retries(open_once, max_retries=self._max_retries)

    async def _send_once(
        self,
        prepared: PreparedRequest,
        body: bytes,
        sent: list[tuple[bytes, bytes]],
        method: str,
        url: httpx2.URL | None,
        keep_error_body: bool,
    ) -> httpx2.Response:
        """One attempt of `_send`: the SDK's exceptions mapped to the contract's errors."""
        try:
            return await prepared.send(body, sent, method=method, url=url)
        except (openai.APIStatusError, openai.APIConnectionError, httpx2.RequestError) as error:
            mapped = self._gateway_error(error)
            if keep_error_body and isinstance(error, openai.APIStatusError) and error.status_code >= 400:
                mapped.upstream_body = error.response.content
            raise mapped from None

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
        listed = cards.data if isinstance(cards, _ModelPage) else cards
        return self.chat_models([card.id for card in listed])

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

    def _chunks(
        self, byte_chunks: AsyncIterator[bytes], model: str, include_reasoning: bool
    ) -> AsyncGenerator[Chunk, None]:
        """Content (and reasoning, tool-call) chunks as they arrive, then ONE final chunk
        with the finish reason and the usage (`ChatEvents`)."""
        return read(byte_chunks, ChatEvents(self.name, model, include_reasoning))

    async def aclose(self) -> None:
        await self._client.close()


class ChatEvents(EventReader):
    """The events of one Chat Completions stream: each `data:` chunk's reasoning, content
    and tool-call deltas as chunks; `data: [DONE]` ends it. The final chunk carries the
    finish reason and the usage (OpenAI sends the usage in a later chunk with empty
    `choices`)."""

    __slots__ = ("model", "include_reasoning", "finish_reason", "usage", "calls")

    def __init__(self, provider: str, model: str, include_reasoning: bool) -> None:
        super().__init__(provider)
        self.model = model
        self.include_reasoning = include_reasoning
        self.finish_reason: FinishReason | None = None
        self.usage: Usage | None = None
        self.calls: _ToolCalls | None = None

    def on_event(self, event: sse.Event) -> Chunk | Ending | None:
        data = event.data
        if data == "[DONE]":
            return END
        chunk = _chunk_decoder.decode(data)
        if chunk.error is not None:
            raise _stream_error(chunk.error, self.provider)
        if chunk.usage is not None:
            self.usage = _usage(chunk.usage)
        if not chunk.choices:
            return None
        choice = chunk.choices[0]
        if choice.finish_reason is not None:
            self.finish_reason = FINISH_REASONS.get(choice.finish_reason, FinishReason.STOP)
        delta = choice.delta
        if delta is None:
            return None
        if self.include_reasoning and (reasoning := delta.reasoning_content or delta.reasoning):
            self._queue(delta, reasoning)
            return None
        tool_calls = delta.tool_calls
        if not tool_calls:
            return StreamChunk(delta.content, None, self.model, self.provider) if delta.content else None
        if len(tool_calls) == 1 and not delta.content:  # the usual call fragment
            call = tool_calls[0]
            calls = self.calls
            if calls is not None and call.id is None:  # most often the next arguments of a call begun
                known = calls.ours.get(call.index)
                function = call.function
                if known is not None and function is not None and function.arguments:
                    return ToolCallChunk(known[0], None, None, function.arguments)
            return (calls or self._calls()).piece(call)
        self._queue(delta, None)
        return None

    def _calls(self) -> _ToolCalls:
        calls = self.calls
        if calls is None:
            calls = self.calls = _ToolCalls()
        return calls

    def _queue(self, delta: _Delta, reasoning: str | None) -> None:
        """A delta with reasoning (to be sent) or tool calls: its chunks in order
        (reasoning, content, calls)."""
        more = self.more
        if reasoning:  # servers that send both send the same text
            more.append(ReasoningChunk(reasoning, self.model, self.provider))
        if delta.content:
            more.append(StreamChunk(delta.content, None, self.model, self.provider))
        if delta.tool_calls:
            calls = self._calls()
            more.extend(piece for call in delta.tool_calls if (piece := calls.piece(call)) is not None)

    def final(self, ended: bool) -> StreamChunk:
        finish_reason = self.finish_reason
        if finish_reason is None:
            raise UpstreamError(f"{self.provider} ended the stream without a finish reason", provider=self.provider)
        if self.calls is not None and finish_reason is FinishReason.STOP:
            finish_reason = FinishReason.TOOL_CALLS  # OpenAI ends a call forced by `tool_choice` with `stop`
        return StreamChunk("", finish_reason, self.model, self.provider, self.usage)


class _ToolCalls:
    """The calls of one stream: each upstream call's index in ours (0, 1, … in the order
    the calls began; normally the upstream's own). A delta with a new `id` at an index
    already seen starts a new call (servers that number every call 0)."""

    __slots__ = ("ours", "_began")

    def __init__(self) -> None:
        self.ours: dict[int, tuple[int, str]] = {}  # upstream index → (our index, call id)
        self._began = 0

    def piece(self, delta: _ToolCallDelta) -> ToolCallChunk | None:
        """The chunk for one `delta.tool_calls` entry (`None`: nothing new in it)."""
        function = delta.function
        arguments = function.arguments if function is not None else None
        known = self.ours.get(delta.index)
        if known is None or (delta.id is not None and delta.id != known[1]):
            call_id = delta.id or "call_" + uuid.uuid4().hex[:24]
            index = self._began
            self._began += 1
            self.ours[delta.index] = (index, call_id)
            name = function.name if function is not None else None
            return ToolCallChunk(index, call_id, name or "", arguments or "")
        if arguments:
            return ToolCallChunk(known[0], None, None, arguments)
        return None


def _usage(wire: _WireUsage) -> Usage:
    """Ours; `reasoning_tokens` and `cached_tokens` only when not zero (OpenAI reports both
    on every answer)."""
    total = wire.total_tokens
    if total is None:
        total = wire.prompt_tokens + wire.completion_tokens
    details = wire.completion_tokens_details
    reasoning = details.reasoning_tokens if details is not None and details.reasoning_tokens else None
    prompt_details = wire.prompt_tokens_details
    cached = prompt_details.cached_tokens if prompt_details is not None and prompt_details.cached_tokens else None
    return Usage(
        prompt_tokens=wire.prompt_tokens,
        completion_tokens=wire.completion_tokens,
        total_tokens=total,
        reasoning_tokens=reasoning,
        cached_tokens=cached,
    )


def _stream_error(error: _WireError | str, provider: str) -> UpstreamError:
    message = error if isinstance(error, str) else error.message
    return UpstreamError(f"{provider} failed mid-stream: {message or 'unknown error'}", provider=provider)
