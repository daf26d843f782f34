"""The `openai` provider: Chat Completions streaming through `openai.AsyncOpenAI`.

The SDK does what it is good at — configuration, auth, building and sending the request,
turning an error status into an exception. We skip what costs CPU per request and per
chunk: the body is a msgspec-encoded Struct handed to the SDK's own `post` (no typed
transform), which returns the raw `httpx2.Response` once its status was checked
(`stream=True`, nothing read yet); its bytes go through `sse.Decoder` and one msgspec
decoder of a minimal chunk Struct. Llama 4 on Together speaks the same wire and reuses all of this
(`providers/llama4_stream.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator

import httpx2
import msgspec
import openai
from openai._models import FinalRequestOptions

from streamgate import sse
from streamgate.providers.base import ChunkStream, open_with_retries
from streamgate.errors import GatewayError, ProviderNotConfiguredError, UpstreamError
from streamgate.http_client import response_body, sdk_http_client
from streamgate.settings import Settings
from streamgate.providers.stainless import PreparedRequest, map_sdk_error, map_transport_error
from streamgate.chat_types import ChatMessage, ChatRequest, FinishReason, StreamChunk, Usage, json_encoder

OPENAI_BASE_URL = "https://api.openai.com/v1"
#: Chat models that take `temperature` and `max_tokens` as sent (the o-series take neither).
OPENAI_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano")

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
    """The Chat Completions body, encoded by msgspec and handed to the SDK's own `post`
    (the SDK still builds, authenticates and sends the request and raises its status
    errors); `chat.completions.create` would first walk it through the SDK's typed
    transform, which cost more CPU than the rest of the request (see `bench/`)."""

    model: str
    messages: list[ChatMessage]
    stream: bool
    stream_options: _StreamOptions
    temperature: float | None = None
    max_tokens: int | None = None



class _Delta(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _WireUsage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int | None = None


class _WireError(msgspec.Struct):
    message: str = ""


class _WireChunk(msgspec.Struct):
    """One `data:` payload. `model` and `id` are not read: frames carry the requested
    model (as the contract's example and the error frames do), and skipping unknown
    fields is cheaper than decoding them."""

    choices: list[_Choice] = []
    usage: _WireUsage | None = None
    error: _WireError | str | None = None


_chunk_decoder = msgspec.json.Decoder(_WireChunk)
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
    default_model = "gpt-4o"
    models: tuple[str, ...] = OPENAI_MODELS

    def __init__(self, settings: Settings, *, http_client: httpx2.AsyncClient | None = None) -> None:
        api_key, base_url = self._key_and_base_url(settings)
        self.configured = api_key is not None
        self._max_retries = settings.upstream_max_retries
        self._client = openai.AsyncOpenAI(
            api_key=api_key or _NO_KEY,
            base_url=base_url,
            timeout=httpx2.Timeout(settings.upstream_timeout_s),
            max_retries=0,  # ours: `open_with_retries`, the same policy for every provider
            http_client=http_client or sdk_http_client(settings),
        )
        self._chat = PreparedRequest(
            self._client, FinalRequestOptions.construct(method="post", url="/chat/completions", content=b"")
        )
        self._chat.headers = self._upstream_headers(self._chat.headers, api_key or _NO_KEY)

    @staticmethod
    def _key_and_base_url(settings: Settings) -> tuple[str | None, str]:
        return settings.openai_api_key, settings.openai_base_url or OPENAI_BASE_URL

    @staticmethod
    def _upstream_headers(headers: list[tuple[bytes, bytes]], api_key: str) -> list[tuple[bytes, bytes]]:
        """The SDK's headers as this upstream gets them (OpenAI: all of them)."""
        return headers

    def check_model(self, model: str) -> None:
        """Refuse a model before any network call (OpenAI: any name goes upstream)."""

    async def stream_chat(self, request: ChatRequest) -> ChunkStream:
        model = request.model or self.default_model
        self.check_model(model)
        if not self.configured:
            raise ProviderNotConfiguredError(f"{self.name} is not configured; set {self.key_env}", provider=self.name)
        body = json_encoder.encode(_WireRequest(
            model, request.messages, True, _STREAM_OPTIONS, request.temperature, request.max_tokens
        ))
        headers = ((b"x-request-id", uuid.uuid4().hex.encode()),)

        async def open_once() -> httpx2.Response:
            try:
                return await self._chat.send(body, headers)
            except (openai.APIStatusError, openai.APIConnectionError, httpx2.RequestError) as error:
                raise self._gateway_error(error) from None

        body, release = response_body(await open_with_retries(open_once, max_retries=self._max_retries))
        return ChunkStream(self._chunks(body, model), release)

    def _gateway_error(self, error: Exception) -> GatewayError:
        return map_sdk_error(
            error,
            provider=self.name,
            key_env=self.key_env,
            status_error=openai.APIStatusError,
            timeout_error=openai.APITimeoutError,
            connection_error=openai.APIConnectionError,
        )

    async def _chunks(self, byte_chunks: AsyncIterator[bytes], model: str) -> AsyncGenerator[StreamChunk, None]:
        """Content chunks as they arrive, then ONE final chunk with the finish reason and
        the usage (OpenAI sends the usage in a later chunk with empty `choices`).

        After `data: [DONE]` the rest of the body is read to its end, so the connection
        goes back to the pool instead of being dropped (a new TLS handshake next time).
        """
        provider = self.name
        finish_reason: FinishReason | None = None
        usage: Usage | None = None
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
                        if choice.delta is not None and choice.delta.content:
                            yield StreamChunk(choice.delta.content, None, model, provider)
                        if choice.finish_reason is not None:
                            finish_reason = FINISH_REASONS.get(choice.finish_reason, FinishReason.STOP)
                    if chunk.usage is not None:
                        usage = _usage(chunk.usage)
                if done:
                    break
        except httpx2.RequestError as error:  # a reset, a read timeout, a broken gzip body
            raise map_transport_error(error, provider=provider) from None
        if finish_reason is None:
            raise UpstreamError(f"{provider} ended the stream without a finish reason", provider=provider)
        yield StreamChunk("", finish_reason, model, provider, usage)
        if done:
            await _drain(byte_chunks)

    async def aclose(self) -> None:
        await self._client.close()


def _usage(wire: _WireUsage) -> Usage:
    total = wire.total_tokens
    if total is None:
        total = wire.prompt_tokens + wire.completion_tokens
    return Usage(wire.prompt_tokens, wire.completion_tokens, total)


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
