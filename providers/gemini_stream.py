"""The `gemini` provider: Gemini 2.5 Flash over one long-lived `google.genai.Client`.

What the SDK does, and what it does not (google-genai 3.4, measured, see the report):

- The official `client.aio.models.generate_content_stream` costs ~200 µs per chunk (the
  SDK's SSE lines → `json.loads` → `json.dumps` → `json.loads` → converter → pydantic
  `GenerateContentResponse` → continuation bookkeeping), against ~8 µs here: the raw
  `alt=sse` bytes go through our `sse.Decoder` into msgspec Structs. Building the
  request with `GenerateContentConfig` + the SDK's converter costs ~1.8 ms per request
  (and sends `thinkingConfig.thinking_budget` in snake_case); our msgspec request Struct
  sends the REST shape (`generationConfig.thinkingConfig.thinkingBudget`).
- The SDK client still owns configuration and auth: API key (`x-goog-api-key`), base URL
  (`GEMINI_BASE_URL`, the host root), API version (pinned to `v1beta`), its version
  headers, all through `client._api_client._build_request` (the one private call; the
  tests run the real SDK, so a change there fails them). Error statuses are parsed by
  the SDK's public `errors.APIError.raise_for_async_response`.
- Its HTTP client is ours: the shared `sdk_http_client` handed over as
  `HttpOptions(httpx_async_client=...)` (tests pass one over an `httpx2.MockTransport`),
  so the SDK never switches to aiohttp (its timeout is a total one), and we hold the
  response: `aclose()` closes the upstream connection at once.
- Timeouts: `HttpOptions.timeout` (ms) becomes a per-request `httpx2.Timeout` (per read,
  good) but also an `X-Server-Timeout` header, a *total* deadline at Google that would
  cut long answers; and left unset, the SDK passes `timeout=None`, switching the
  client's timeouts off. We send with our client directly, so `UPSTREAM_TIMEOUT_S` is
  its connect / write / pool / between-reads timeout and no `X-Server-Timeout` is sent.
- Retries: the SDK's are off (`HttpRetryOptions(attempts=1)`); opening is retried by
  `open_with_retries`, never a stream that has yielded text.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx2
import msgspec
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from streamgate.providers.base import ChunkStream, open_with_retries
from streamgate.errors import (
    GatewayError,
    InvalidRequestError,
    ProviderAuthError,
    ProviderNotConfiguredError,
    StreamError,
    UpstreamError,
    UpstreamTimeoutError,
    error_from_status,
)
from streamgate.http_client import response_body, sdk_http_client
from streamgate.settings import Settings
from streamgate.providers.stainless import connection_failed, map_transport_error
from streamgate.chat_types import ChatRequest, FinishReason, StreamChunk, Usage, json_encoder
from streamgate.sse import Decoder, Event

PROVIDER = "gemini"
KEY_ENV = "GEMINI_API_KEY"
THINKING_BUDGET = 1024
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# Gemini's finishReason → ours. Any reason not listed ends the stream with `error`.
FINISH_REASONS = {
    "STOP": FinishReason.STOP,
    "MAX_TOKENS": FinishReason.LENGTH,
    **dict.fromkeys(
        ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
         "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "MODEL_ARMOR"),
        FinishReason.CONTENT_FILTER,
    ),
}


# --- the request we send (the REST shape of `models.streamGenerateContent`) -----------


class _Part(msgspec.Struct):
    text: str


class _Content(msgspec.Struct, omit_defaults=True):
    parts: list[_Part]
    role: str | None = None


class _ThinkingConfig(msgspec.Struct, rename="camel"):
    thinking_budget: int


class _GenerationConfig(msgspec.Struct, rename="camel", omit_defaults=True):
    thinking_config: _ThinkingConfig
    temperature: float | None = None
    max_output_tokens: int | None = None


class _GenerateContentRequest(msgspec.Struct, rename="camel", omit_defaults=True):
    contents: list[_Content]
    generation_config: _GenerationConfig
    system_instruction: _Content | None = None


# --- the frames we read (only the fields we use; the rest is skipped unparsed) --------


class _ResponsePart(msgspec.Struct):
    text: str = ""
    thought: bool = False


class _ResponseContent(msgspec.Struct):
    parts: list[_ResponsePart] = []


class _Candidate(msgspec.Struct, rename="camel"):
    content: _ResponseContent | None = None
    finish_reason: str | None = None


class _UsageMetadata(msgspec.Struct, rename="camel"):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    thoughts_token_count: int = 0
    total_token_count: int | None = None


class _PromptFeedback(msgspec.Struct, rename="camel"):
    block_reason: str | None = None


class _FrameError(msgspec.Struct):
    code: int = 500
    message: str = ""


class _Frame(msgspec.Struct, rename="camel"):
    candidates: list[_Candidate] = []
    usage_metadata: _UsageMetadata | None = None
    prompt_feedback: _PromptFeedback | None = None
    error: _FrameError | None = None


_frame_decoder = msgspec.json.Decoder(_Frame)


class GeminiStreamAdapter:
    name = PROVIDER
    default_model = "gemini-2.5-flash"
    models = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite")

    def __init__(self, settings: Settings, *, http_client: httpx2.AsyncClient | None = None) -> None:
        """Build the one SDK client (only when a key is set). `http_client` is for tests."""
        self.max_retries = settings.upstream_max_retries
        self._http = http_client or sdk_http_client(settings)
        self._client: genai.Client | None = None
        if settings.gemini_api_key:
            self._client = genai.Client(
                api_key=settings.gemini_api_key,
                vertexai=False,  # never switched by GOOGLE_GENAI_USE_VERTEXAI in the environment
                http_options=genai_types.HttpOptions(
                    base_url=settings.gemini_base_url,
                    api_version="v1beta",
                    httpx_async_client=self._http,
                    retry_options=genai_types.HttpRetryOptions(attempts=1),
                ),
            )

    @property
    def configured(self) -> bool:
        return self._client is not None

    async def stream_chat(self, request: ChatRequest) -> ChunkStream:
        if self._client is None:
            raise ProviderNotConfiguredError(f"gemini is not configured; set {KEY_ENV}", provider=PROVIDER)
        model = request.model or self.default_model
        if not _MODEL_NAME.fullmatch(model):
            raise InvalidRequestError(f"$.model: {model!r} is not a Gemini model name", provider=PROVIDER)
        sdk_request = self._client._api_client._build_request(
            "post", f"models/{model}:streamGenerateContent?alt=sse", {}
        )
        upstream_request = self._http.build_request(
            "POST", sdk_request.url, content=json_encoder.encode(request_body(request)), headers=sdk_request.headers
        )
        response = await open_with_retries(lambda: self._open(upstream_request), max_retries=self.max_retries)
        body, release = response_body(response)
        return ChunkStream(self._chunks(body, model), release)

    async def _open(self, upstream_request: httpx2.Request) -> httpx2.Response:
        """Send the request; return the response once Gemini answered 200."""
        try:
            response = await self._http.send(upstream_request, stream=True)
        except httpx2.TimeoutException:
            raise UpstreamTimeoutError("gemini did not answer in time", provider=PROVIDER) from None
        except httpx2.TransportError:
            raise connection_failed(PROVIDER) from None
        if response.status_code != 200:
            try:
                await genai_errors.APIError.raise_for_async_response(response)
            except genai_errors.APIError as error:
                raise error_from_api(error) from None
            except httpx2.TransportError as error:
                raise map_transport_error(error, provider=PROVIDER) from None
            finally:
                await response.aclose()
        return response

    async def _chunks(self, body: AsyncIterator[bytes], model: str) -> AsyncGenerator[StreamChunk, None]:
        """Every non-thought text part as a chunk; after the stream ends, the final one."""
        decoder = Decoder()
        finish_reason: str | None = None
        block_reason: str | None = None
        usage: _UsageMetadata | None = None
        try:
            async for data in body:
                for event in decoder.feed(data):
                    if type(event) is not Event:
                        continue
                    frame = _frame_decoder.decode(event.data)
                    if frame.error is not None:
                        raise error_from_status(frame.error.code, frame.error.message, provider=PROVIDER,
                                                key_env=KEY_ENV)
                    if frame.usage_metadata is not None:
                        usage = frame.usage_metadata
                    if frame.prompt_feedback is not None and frame.prompt_feedback.block_reason:
                        block_reason = frame.prompt_feedback.block_reason
                    if frame.candidates:
                        candidate = frame.candidates[0]
                        if candidate.content is not None:
                            for part in candidate.content.parts:
                                if part.text and not part.thought:
                                    yield StreamChunk(part.text, None, model, PROVIDER)
                        if candidate.finish_reason:
                            finish_reason = candidate.finish_reason
        except httpx2.TransportError as error:
            raise map_transport_error(error, provider=PROVIDER) from None
        except (msgspec.DecodeError, msgspec.ValidationError, httpx2.DecodingError) as error:
            raise UpstreamError(f"gemini sent malformed data: {error}", provider=PROVIDER) from None
        if finish_reason is None and block_reason is None:
            return  # the server reports a stream that ended without a finish reason
        reason, failure = ending(finish_reason, block_reason)
        yield StreamChunk("", reason, model, PROVIDER, usage_of(usage))
        if failure is not None:
            raise failure  # after the final frame: the server adds the `event: error` frame

    async def aclose(self) -> None:
        if self._client is not None:
            self._client.close()  # the SDK's own sync client; ours is closed below
        await self._http.aclose()


def request_body(request: ChatRequest) -> _GenerateContentRequest:
    """Our request as Gemini's: `assistant` → `model`, system messages → `systemInstruction`."""
    system = [_Part(m.text) for m in request.messages if m.role == "system"]
    contents = [
        _Content([_Part(m.text)], "model" if m.role == "assistant" else "user")
        for m in request.messages
        if m.role != "system"
    ]
    budget = THINKING_BUDGET if request.thinking_enabled else 0
    config = _GenerationConfig(_ThinkingConfig(budget), request.temperature, request.max_tokens)
    return _GenerateContentRequest(contents, config, _Content(system) if system else None)


def ending(finish_reason: str | None, block_reason: str | None) -> tuple[FinishReason, GatewayError | None]:
    """Our finish reason for Gemini's, and the failure to report after the final frame:
    a safety stop or a blocked prompt is `content_filter`, an unknown reason an `error`."""
    if finish_reason is None:
        return FinishReason.CONTENT_FILTER, StreamError(
            f"gemini blocked the prompt ({block_reason})", type="content_filter", provider=PROVIDER)
    reason = FINISH_REASONS.get(finish_reason, FinishReason.ERROR)
    if reason is FinishReason.CONTENT_FILTER:
        return reason, StreamError(f"gemini stopped the answer ({finish_reason})", type="content_filter",
                                   provider=PROVIDER)
    if reason is FinishReason.ERROR:
        return reason, UpstreamError(f"gemini stopped the answer with finish reason {finish_reason}",
                                     provider=PROVIDER)
    return reason, None


def usage_of(metadata: _UsageMetadata | None) -> Usage | None:
    """Gemini's usage as ours. Thinking tokens are billed as output, so `completion_tokens`
    counts them with the answer's (`candidates` + `thoughts`)."""
    if metadata is None:
        return None
    prompt = metadata.prompt_token_count
    completion = metadata.candidates_token_count + metadata.thoughts_token_count
    total = metadata.total_token_count
    return Usage(prompt, completion, total if total is not None else prompt + completion)


def error_from_api(error: genai_errors.APIError) -> GatewayError:
    """An upstream error status as the contract's error (Gemini's bad key is a 400)."""
    details = error_details(error.details)
    if error.code in (401, 403) or any(d.get("reason") == "API_KEY_INVALID" for d in details):
        return ProviderAuthError(f"gemini rejected the API key; check {KEY_ENV}", provider=PROVIDER)
    retry_after = error.response.headers.get("retry-after") if error.response is not None else None
    message = error.message or str(error.status or "")
    return error_from_status(error.code, message, provider=PROVIDER, key_env=KEY_ENV,
                             retry_after=retry_after or retry_delay(details))


def error_details(body: Any) -> list[dict[str, Any]]:
    """The `error.details` entries of a Google error body (`ErrorInfo`, `RetryInfo`, ...)."""
    error = body.get("error", body) if isinstance(body, dict) else None
    entries = error.get("details") if isinstance(error, dict) else None
    return [entry for entry in entries if isinstance(entry, dict)] if isinstance(entries, list) else []


def retry_delay(details: list[dict[str, Any]]) -> str | None:
    """Gemini's 429 says when to retry in a `RetryInfo` (`"retryDelay": "7s"`), not in a
    `Retry-After` header: as whole seconds, rounded up."""
    for entry in details:
        delay = entry.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return str(math.ceil(float(delay[:-1])))
            except ValueError:
                return None
    return None
