"""The `gemini` provider: Gemini 2.5 and Gemini 3+ over one long-lived `google.genai.Client`.

What the SDK does, and what it does not (the figures are in docs/BENCHMARKS.md):

- The official `client.aio.models.generate_content_stream` walks each chunk through the
  SDK's SSE lines → `json.loads` → `json.dumps` → `json.loads` → converter → pydantic
  `GenerateContentResponse` → continuation bookkeeping: here the raw `alt=sse` bytes go
  through our `sse.Decoder` into msgspec Structs. Building the request with
  `GenerateContentConfig` + the SDK's converter is slow too (and sends
  `thinkingConfig.thinking_budget` in snake_case); our msgspec request Struct sends the
  REST shape (`generationConfig.thinkingConfig.thinkingBudget`).
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
- `list_models` is the SDK's own `models.list` (a background call: its cost does not matter).

Tool calls carry no state in the gateway: Gemini's `thoughtSignature` of a call travels to
the client inside the call id the gateway makes, and comes back in it on the next turn.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx2
import msgspec
import multidict
import yarl
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from .. import keys
from ..adapter import ChunkStream, default_first, open_with_retries
from ..chat_types import (
    ChatMessage,
    ChatRequest,
    Chunk,
    FinishReason,
    ImagePart,
    NamedToolChoice,
    ReasoningChunk,
    SignatureChunk,
    StreamChunk,
    TextPart,
    ToolCall,
    ToolCallChunk,
    ToolChoice,
    Usage,
    json_encoder,
)
from ..errors import (
    GatewayError,
    InvalidRequestError,
    ProviderAuthError,
    ProviderNotConfiguredError,
    RateLimitedError,
    StreamError,
    UpstreamError,
    UpstreamTimeoutError,
    error_from_status,
)
from ..json_depth import MAX_DEPTH, nesting_depth
from ..providers.stainless import connection_failed, map_transport_error
from ..sdk_internals import require_internals
from ..settings import Settings
from ..sse import Event, LineTooLongError
from ..upstream_http import BodyTooLarge, on_close, read_at_most, response_body, sdk_http_client, transport_of
from .stream_reader import Ending, EventReader, read

PROVIDER = "gemini"
KEY_ENV = "GEMINI_API_KEY"
DEFAULT_MODEL = "gemini-2.5-flash"
#: The built-in model list (the catalog replaces it with `list_models()`), default first.
MODELS = (
    "gemini-2.5-flash",
    "gemini-2.5-pro",
    "gemini-2.5-flash-lite",
    "gemini-3.8-flash",
    "gemini-3.5-flash-lite",
    "gemini-3.1-pro-preview",
)
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# Gemini's finishReason → ours. Any reason not listed ends the stream with `error`.
FINISH_REASONS = {
    "STOP": FinishReason.STOP,
    "MAX_TOKENS": FinishReason.LENGTH,
    **dict.fromkeys(
        (
            "SAFETY",
            "RECITATION",
            "BLOCKLIST",
            "PROHIBITED_CONTENT",
            "SPII",
            "IMAGE_SAFETY",
            "IMAGE_PROHIBITED_CONTENT",
            "IMAGE_RECITATION",
            "MODEL_ARMOR",
        ),
        FinishReason.CONTENT_FILTER,
    ),
}

# --- thinking: Gemini 2.5 takes a token budget, Gemini 3 and later a level ---------------

THINKING_BUDGET = 1024  # the seeds' `thinking_enabled: true`
#: `reasoning_effort` → Gemini 2.5 `thinkingBudget`.
THINKING_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576}
#: Gemini 2.5 Pro cannot switch thinking off: its smallest budget stands in for 0.
PRO_MIN_BUDGET = 128
#: `reasoning_effort` → Gemini 3+ `thinkingLevel` (the SDK's `ThinkingLevel` values);
#: these models cannot switch thinking off, so `none` is the least there is.
THINKING_LEVELS = {"none": "MINIMAL", "minimal": "MINIMAL", "low": "LOW", "medium": "MEDIUM", "high": "HIGH"}
#: Gemini 3 and later, and the `-latest` aliases (which name them today).
_LEVEL_MODEL = re.compile(r"gemini-(?:[3-9]|[1-9][0-9])|gemini-(?:flash|flash-lite|pro)-latest$")

# --- tools ----------------------------------------------------------------------------------

TOOL_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
#: What Google documents for a function call the model did not make itself (history from
#: another model or a client that lost the signature): Gemini 3 refuses a step whose first
#: call carries no signature at all.
FOREIGN_SIGNATURE = "skip_thought_signature_validator"
#: A gateway-made call id: `call_<hex>`, then `.` and the call's `thoughtSignature` in
#: URL-safe base64 without padding when Gemini sent one (so the next turn can return it).
_CALL_ID = re.compile(r"call_[0-9a-f]{24}\.([A-Za-z0-9_-]+)")
_TO_URL_SAFE = str.maketrans("+/", "-_", "=")
_FROM_URL_SAFE = str.maketrans("-_", "+/")

IMAGE_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}


# --- the request we send (the REST shape of `models.streamGenerateContent`) -----------


class _Part(msgspec.Struct, rename="camel", omit_defaults=True):
    text: str
    thought_signature: str | None = None


class _Blob(msgspec.Struct, rename="camel"):
    mime_type: str
    data: str  # base64, as the data: URL carries it


class _InlineDataPart(msgspec.Struct, rename="camel"):
    inline_data: _Blob


class _FileData(msgspec.Struct, rename="camel", omit_defaults=True):
    file_uri: str
    mime_type: str | None = None


class _FileDataPart(msgspec.Struct, rename="camel"):
    file_data: _FileData


class _FunctionCall(msgspec.Struct):
    name: str
    args: dict[str, Any]


class _FunctionCallPart(msgspec.Struct, rename="camel", omit_defaults=True):
    function_call: _FunctionCall
    thought_signature: str | None = None


class _FunctionResponse(msgspec.Struct):
    name: str
    response: dict[str, Any]


class _FunctionResponsePart(msgspec.Struct, rename="camel"):
    function_response: _FunctionResponse


_AnyPart = _Part | _InlineDataPart | _FileDataPart | _FunctionCallPart | _FunctionResponsePart


class _Content(msgspec.Struct, omit_defaults=True):
    parts: list[_AnyPart]
    role: str | None = None


class _ThinkingConfig(msgspec.Struct, rename="camel", omit_defaults=True, frozen=True):
    thinking_budget: int | None = None
    thinking_level: str | None = None
    include_thoughts: bool | None = None


class _GenerationConfig(msgspec.Struct, rename="camel", omit_defaults=True):
    thinking_config: _ThinkingConfig | None = None
    temperature: float | None = None
    max_output_tokens: int | None = None
    stop_sequences: list[str] | None = None
    top_p: float | None = None
    response_mime_type: str | None = None
    response_json_schema: dict[str, Any] | None = None


class _FunctionDeclaration(msgspec.Struct, rename="camel", omit_defaults=True):
    name: str
    description: str | None = None
    parameters_json_schema: dict[str, Any] | None = None


class _Tool(msgspec.Struct, rename="camel"):
    function_declarations: list[_FunctionDeclaration]


class _FunctionCallingConfig(msgspec.Struct, rename="camel", omit_defaults=True):
    mode: str
    allowed_function_names: list[str] | None = None


class _ToolConfig(msgspec.Struct, rename="camel"):
    function_calling_config: _FunctionCallingConfig


class _GenerateContentRequest(msgspec.Struct, rename="camel", omit_defaults=True):
    contents: list[_Content]
    generation_config: _GenerationConfig
    system_instruction: _Content | None = None
    tools: list[_Tool] | None = None
    tool_config: _ToolConfig | None = None


class _CountedRequest(msgspec.Struct, rename="camel", omit_defaults=True):
    model: str
    contents: list[_Content]
    system_instruction: _Content | None = None
    tools: list[_Tool] | None = None


class _CountTokensRequest(msgspec.Struct, rename="camel"):
    generate_content_request: _CountedRequest


class _TokenCount(msgspec.Struct, rename="camel"):
    total_tokens: int = 0


_count_decoder = msgspec.json.Decoder(_TokenCount)
_BUDGET_ON = _ThinkingConfig(THINKING_BUDGET)
_BUDGET_OFF = _ThinkingConfig(0)
_PRO_BUDGET_OFF = _ThinkingConfig(PRO_MIN_BUDGET)


# --- the frames we read (only the fields we use; the rest is skipped unparsed) --------


class _ResponseFunctionCall(msgspec.Struct):
    name: str = ""
    args: msgspec.Raw = msgspec.Raw(b"{}")  # Gemini leaves out the arguments of a call with none


class _ResponsePart(msgspec.Struct, rename="camel"):
    text: str = ""
    thought: bool = False
    function_call: _ResponseFunctionCall | None = None
    thought_signature: str | None = None


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
    cached_content_token_count: int = 0  # part of `prompt_token_count`


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
_arguments_decoder = msgspec.json.Decoder(dict[str, Any])


class _Request(NamedTuple):
    """One call as the genai client built it: its URL, its headers (a key's may be put
    in per attempt), and our body."""

    url: str
    headers: dict[str, str]
    content: bytes


class GeminiStreamAdapter:
    name = PROVIDER
    default_model = DEFAULT_MODEL
    models: tuple[str, ...] = MODELS

    def __init__(self, settings: Settings, *, http_client: httpx2.AsyncClient | None = None) -> None:
        """Build the one SDK client (only when a key is set). `http_client` is for tests."""
        self.max_retries = settings.upstream_max_retries
        self.timeout_s = settings.upstream_timeout_s
        if settings.gemini_default_model:
            self.default_model = settings.gemini_default_model
            self.models = default_first(self.default_model, MODELS)
        self._http = http_client or sdk_http_client(settings)
        self._direct = transport_of(self._http)
        if self._direct is not None:
            self._direct_timeout = self._direct.timeout(self._http.timeout.as_dict())
            #: The `httpx2` client's own headers (accept, encodings, keep-alive), names in lower case.
            self._default_headers = [(name.lower(), value) for name, value in self._http.headers.items()]
        self._client: genai.Client | None = None
        #: Several keys (`GEMINI_API_KEY=k1,k2`): each request's `x-goog-api-key` chosen per call.
        self._keys = keys.ring(PROVIDER, settings.gemini_api_key, settings.redis_url)
        api_key = keys.first_key(settings.gemini_api_key)
        if api_key:
            self._client = genai.Client(
                api_key=api_key,
                vertexai=False,  # never switched by GOOGLE_GENAI_USE_VERTEXAI in the environment
                http_options=genai_types.HttpOptions(
                    base_url=settings.gemini_base_url,
                    api_version="v1beta",
                    httpx_async_client=self._http,
                    retry_options=genai_types.HttpRetryOptions(attempts=1),
                ),
            )
            require_internals("google-genai", self._client._api_client, ("_build_request",))

    @property
    def configured(self) -> bool:
        return self._client is not None

    def _sdk_client(self) -> genai.Client:
        if self._client is None:
            raise ProviderNotConfiguredError(f"gemini is not configured; set {KEY_ENV}", provider=PROVIDER)
        return self._client

    async def stream_chat(self, request: ChatRequest) -> ChunkStream:
        client = self._sdk_client()
        model = request.model or self.default_model
        if not _MODEL_NAME.fullmatch(model):
            raise InvalidRequestError(f"$.model: {model!r} is not a Gemini model name", provider=PROVIDER)
        content = json_encoder.encode(request_body(request, model))
        sdk_request = client._api_client._build_request("post", f"models/{model}:streamGenerateContent?alt=sse", {})
        upstream_request = _Request(sdk_request.url, sdk_request.headers, content)
        response = await open_with_retries(lambda: self._open(upstream_request), max_retries=self.max_retries)
        body, release = response_body(response)
        return ChunkStream(self._chunks(body, model, request.include_reasoning), release)

    async def count_tokens(self, request: ChatRequest) -> int:
        """Gemini's own count of the request's input (`models.countTokens`), for the
        Messages dialect's `count_tokens`."""
        client = self._sdk_client()
        model = request.model or self.default_model
        if not _MODEL_NAME.fullmatch(model):
            raise InvalidRequestError(f"$.model: {model!r} is not a Gemini model name", provider=PROVIDER)
        body = request_body(request, model)
        count = _CountTokensRequest(
            _CountedRequest(f"models/{model}", body.contents, body.system_instruction, body.tools)
        )
        sdk_request = client._api_client._build_request("post", f"models/{model}:countTokens", {})
        upstream_request = _Request(sdk_request.url, sdk_request.headers, json_encoder.encode(count))
        response = await open_with_retries(lambda: self._open(upstream_request), max_retries=self.max_retries)
        try:
            return _count_decoder.decode(await response.aread()).total_tokens
        except httpx2.TransportError as error:
            raise map_transport_error(error, provider=PROVIDER) from None
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise UpstreamError("gemini sent a malformed token count", provider=PROVIDER) from None
        finally:
            await response.aclose()

    async def list_models(self) -> list[str]:
        """`models.list` through the SDK (every page): the ids, without `models/`, of the
        models that take `generateContent`. The SDK's own timeout (per read) applies."""
        config = genai_types.ListModelsConfig(
            page_size=1000, http_options=genai_types.HttpOptions(timeout=int(self.timeout_s * 1000))
        )
        pager = await self._sdk_client().aio.models.list(config=config)
        return [
            model.name.removeprefix("models/")
            async for model in pager
            if model.name and "generateContent" in (model.supported_actions or ())
        ]

    async def _open(self, upstream_request: _Request) -> httpx2.Response:
        """Send the request; return the response once Gemini answered 200. With several
        keys, a key refused (and now resting) is replaced by another at once."""
        ring = self._keys
        if ring is None:
            return await self._open_with_key(upstream_request, None, -1)
        for _ in range(len(ring.keys) - 1):
            try:
                return await self._open_with_key(upstream_request, ring, ring.choose())
            except (RateLimitedError, ProviderAuthError) as error:
                if not ring.usable() or isinstance(error, ProviderNotConfiguredError):
                    raise
        return await self._open_with_key(upstream_request, ring, ring.choose())

    async def _open_with_key(
        self, upstream_request: _Request, ring: keys.KeyRing | None, index: int
    ) -> httpx2.Response:
        if ring is not None:
            upstream_request.headers["x-goog-api-key"] = ring.keys[index]
        try:
            response = await self._send(upstream_request)
        except BaseException as error:
            if ring is not None:
                ring.release(index)
            if isinstance(error, httpx2.TimeoutException):
                raise UpstreamTimeoutError("gemini did not answer in time", provider=PROVIDER) from None
            if isinstance(error, httpx2.TransportError):
                raise connection_failed(PROVIDER) from None
            raise
        if ring is not None:
            if response.status_code == 200:
                on_close(response, lambda: ring.release(index))
            else:
                ring.release(index)
        if response.status_code != 200:
            try:
                response = await read_at_most(response)  # an error body: bounded, even gzipped
                await genai_errors.APIError.raise_for_async_response(response)
            except genai_errors.APIError as error:
                mapped = error_from_api(error)
                if ring is not None:
                    ring.answered(
                        index, 401 if isinstance(mapped, ProviderAuthError) else mapped.status, mapped.retry_after
                    )
                raise mapped from None
            except BodyTooLarge as error:
                raise UpstreamError(f"gemini sent an answer too large to read: {error}", provider=PROVIDER) from None
            except httpx2.TransportError as error:
                raise map_transport_error(error, provider=PROVIDER) from None
            finally:
                await response.aclose()
        return response

    async def _send(self, upstream_request: _Request) -> httpx2.Response:
        """One attempt, whatever its status. With `sdk_http_client`'s client, straight to its
        transport (the headers `httpx2` would send: the client's defaults under the SDK's),
        without building an `httpx2.Request` or passing `httpx2`'s send layers; an error
        status's response then gets the `httpx2.Request` the SDK's error is worded from."""
        url, headers, content = upstream_request
        direct = self._direct
        if direct is None:
            built = self._http.build_request("POST", url, content=content, headers=headers)
            return await self._http.send(built, stream=True)
        sdk_headers = {name.lower(): value for name, value in headers.items()}
        sent = multidict.CIMultiDict((name, value) for name, value in self._default_headers if name not in sdk_headers)
        sent.extend(sdk_headers)
        response = await direct.open("POST", yarl.URL(url), sent, content, self._direct_timeout)
        if response.status_code != 200:
            response.request = self._http.build_request("POST", url, content=content, headers=headers)
        return response

    def _chunks(self, body: AsyncIterator[bytes], model: str, include_reasoning: bool) -> AsyncGenerator[Chunk, None]:
        """Every non-thought text part as a chunk, thought parts as reasoning (when asked),
        each `functionCall` part as one whole tool call; after the stream ends, the final
        chunk (`GenerateEvents`)."""
        return read(body, GenerateEvents(model, include_reasoning))

    async def aclose(self) -> None:
        if self._client is not None:
            self._client.close()  # the SDK's own sync client; ours is closed below
        await self._http.aclose()


class GenerateEvents(EventReader):
    """The frames of one `streamGenerateContent?alt=sse` stream: SSE events, each a whole
    `GenerateContentResponse`; no event ends it but the body's end. The first candidate's
    parts are chunks; the finish reason, a blocked prompt and the usage (the latest sent)
    make the final chunk, and a failure reported after it."""

    __slots__ = ("model", "include_reasoning", "finish_reason", "block_reason", "usage", "calls")

    def __init__(self, model: str, include_reasoning: bool) -> None:
        super().__init__(PROVIDER)
        self.model = model
        self.include_reasoning = include_reasoning
        self.finish_reason: str | None = None
        self.block_reason: str | None = None
        self.usage: _UsageMetadata | None = None
        self.calls = 0

    def on_event(self, event: Event) -> Chunk | Ending | None:
        frame = _frame_decoder.decode(event.data)
        if frame.error is not None:
            raise error_from_status(frame.error.code, frame.error.message, provider=PROVIDER, key_env=KEY_ENV)
        if frame.usage_metadata is not None:
            self.usage = frame.usage_metadata
        if frame.prompt_feedback is not None and frame.prompt_feedback.block_reason:
            self.block_reason = frame.prompt_feedback.block_reason
        if not frame.candidates:
            return None
        candidate = frame.candidates[0]
        if candidate.finish_reason:
            self.finish_reason = candidate.finish_reason
        if candidate.content is None:
            return None
        parts = candidate.content.parts
        if len(parts) == 1:
            part = parts[0]
            if part.text and not part.thought and not part.thought_signature:
                return StreamChunk(part.text, None, self.model, PROVIDER)
        for part in parts:
            self._queue(part)
        return None

    def _queue(self, part: _ResponsePart) -> None:
        """A part's chunks: its text (or thought), or its call (whose signature travels in
        the call's id); else its signature after its text."""
        more = self.more
        if part.text:
            if not part.thought:
                more.append(StreamChunk(part.text, None, self.model, PROVIDER))
            elif self.include_reasoning:
                more.append(ReasoningChunk(part.text, self.model, PROVIDER))
        elif part.function_call is not None:
            more.append(tool_call_chunk(self.calls, part.function_call, part.thought_signature))
            self.calls += 1
            return
        if part.thought_signature:
            more.append(SignatureChunk(part.thought_signature))

    def final(self, ended: bool) -> StreamChunk | None:
        """None when the server reports a stream that ended without a finish reason; a
        safety stop's or an unknown reason's failure goes after the final chunk (the server
        adds the `event: error` frame)."""
        if self.finish_reason is None and self.block_reason is None:
            return None
        reason, self.failure = ending(self.finish_reason, self.block_reason)
        if self.calls and reason is FinishReason.STOP:
            reason = FinishReason.TOOL_CALLS
        return StreamChunk("", reason, self.model, PROVIDER, usage_of(self.usage))

    def malformed(self, error: msgspec.DecodeError | httpx2.DecodingError) -> UpstreamError:
        return UpstreamError(f"gemini sent malformed data: {error}", provider=PROVIDER)

    def broken(self, error: httpx2.RequestError | LineTooLongError) -> GatewayError:
        """Bad gzip is malformed data; any other failure the transport's."""
        if isinstance(error, httpx2.DecodingError):
            return self.malformed(error)
        return map_transport_error(error, provider=PROVIDER)


def tool_call_chunk(index: int, call: _ResponseFunctionCall, signature: str | None) -> ToolCallChunk:
    """A whole `functionCall` as one chunk: a gateway-made id (carrying the call's thought
    signature), the name, and the arguments as compact JSON text (`{}` when none came)."""
    call_id = "call_" + secrets.token_hex(12)
    if signature:
        call_id += "." + signature.translate(_TO_URL_SAFE)
    return ToolCallChunk(index, call_id, call.name, msgspec.json.format(call.args, indent=-1).decode())


def signature_of(call_id: str) -> str | None:
    """The thought signature a gateway-made call id carries, as Gemini sent it (standard
    base64), else None."""
    match = _CALL_ID.fullmatch(call_id)
    if match is None:
        return None
    signature = match.group(1).translate(_FROM_URL_SAFE)
    return signature + "=" * (-len(signature) % 4)


# --- our request as Gemini's -------------------------------------------------------------


def request_body(request: ChatRequest, model: str) -> _GenerateContentRequest:
    """Our request as Gemini's: `assistant` → `model`, system messages → `systemInstruction`,
    tool calls and results → `functionCall` / `functionResponse` parts."""
    contents, system = contents_of(request.messages, model)
    config = _GenerationConfig(
        thinking_of(request, model), request.temperature, request.max_tokens, request.stop_sequences, request.top_p
    )
    response_format = request.response_format
    if response_format is not None and response_format.type != "text":
        config.response_mime_type = "application/json"
        if response_format.json_schema is not None:
            config.response_json_schema = response_format.json_schema.schema
    body = _GenerateContentRequest(contents, config, system)
    if request.tools:
        body.tools = [
            _Tool(
                [
                    _FunctionDeclaration(tool.function.name, tool.function.description, tool.function.parameters)
                    for tool in request.tools
                ]
            )
        ]
        if request.tool_choice is not None:
            body.tool_config = tool_config_of(request.tool_choice)
    return body


def thinking_of(request: ChatRequest, model: str) -> _ThinkingConfig | None:
    """Gemini 2.5: a thinking budget; Gemini 3+: a thinking level; any other model (one
    that cannot think, as far as we know): none. `reasoning_effort` wins over
    `thinking_enabled`; `includeThoughts` when the request wants the reasoning."""
    effort = request.reasoning_effort
    include = True if request.include_reasoning else None
    if model.startswith("gemini-2.5"):
        pro = model.startswith("gemini-2.5-pro")
        if effort is None and include is None:
            if request.thinking_enabled:
                return _BUDGET_ON
            return _PRO_BUDGET_OFF if pro else _BUDGET_OFF
        if effort is not None:
            budget = THINKING_BUDGETS[effort]
        else:
            budget = THINKING_BUDGET if request.thinking_enabled else 0
        budget = max(budget, PRO_MIN_BUDGET) if pro else budget
        # Gemini refuses `includeThoughts` with thinking off (budget 0): a 400.
        return _ThinkingConfig(budget, include_thoughts=include if budget else None)
    if _LEVEL_MODEL.match(model):
        if effort is not None:
            level = THINKING_LEVELS[effort]
        else:
            level = "HIGH" if request.thinking_enabled else "LOW"
        return _ThinkingConfig(thinking_level=level, include_thoughts=include)
    return None


def tool_config_of(choice: ToolChoice) -> _ToolConfig:
    """`tool_choice` as Gemini's function-calling mode: a named function is `ANY` limited
    to that name."""
    if type(choice) is NamedToolChoice:
        return _ToolConfig(_FunctionCallingConfig("ANY", [choice.function.name]))
    return _ToolConfig(_FunctionCallingConfig(TOOL_MODES[choice]))  # type: ignore[index]


def contents_of(messages: list[ChatMessage], model: str) -> tuple[list[_Content], _Content | None]:
    """The conversation as Gemini's `contents` and `systemInstruction`. Consecutive tool
    results become one `user` turn of `functionResponse` parts, each named after the call
    it answers (Gemini matches results to calls by name)."""
    system: list[_AnyPart] = []
    contents: list[_Content] = []
    call_names: dict[str, str] = {}
    results: _Content | None = None  # the `user` turn collecting consecutive tool results
    for index, message in enumerate(messages):
        role = message.role
        if role == "system":
            system.append(_Part(message.text))
            continue
        if role == "tool":
            if results is None:
                results = _Content([], "user")
                contents.append(results)
            results.parts.append(function_response_part(message, index, call_names))
            continue
        results = None
        content = message.content
        gemini_role = "model" if role == "assistant" else "user"
        if type(content) is str and message.tool_calls is None and message.thinking is None:
            contents.append(_Content([_Part(content)], gemini_role))
        else:
            contents.append(_Content(parts_of(message, index, call_names, model), gemini_role))
    return contents, (_Content(system) if system else None)


def parts_of(message: ChatMessage, index: int, call_names: dict[str, str], model: str) -> list[_AnyPart]:
    """A message with content parts or tool calls as Gemini parts (text, images, calls)."""
    parts: list[_AnyPart] = []
    content = message.content
    if type(content) is str:
        if content:
            parts.append(_Part(content))
    elif content is not None:
        for number, part in enumerate(content):  # type: ignore[arg-type]
            if isinstance(part, TextPart):
                parts.append(_Part(part.text))
            elif isinstance(part, ImagePart):
                parts.append(image_part(part, f"$.messages[{index}].content[{number}].image_url.url"))
    signature = next(
        (part.signature for part in reversed(message.thinking or ()) if part.signature and not part.redacted), None
    )
    for number, call in enumerate(message.tool_calls or ()):
        call_names[call.id] = call.function.name
        # Gemini 3 checks the signature of the first call of every step of the current turn.
        first = None
        if number == 0:
            first = signature or (FOREIGN_SIGNATURE if _LEVEL_MODEL.match(model) else None)
        parts.append(function_call_part(call, f"$.messages[{index}].tool_calls[{number}]", first))
    if signature is not None and not message.tool_calls:
        give_back_signature(parts, signature)
    return parts


def give_back_signature(parts: list[_AnyPart], signature: str) -> None:
    """A reasoning signature sent back (`ThinkingPart.signature`, from a dialect that
    carries it) on the part Gemini puts it on in an answer without calls: the last one
    (an empty text part when the answer had no text)."""
    last = parts[-1] if parts else None
    if type(last) is _Part:
        last.thought_signature = signature
    else:
        parts.append(_Part("", signature))


def image_part(part: ImagePart, path: str) -> _InlineDataPart | _FileDataPart:
    """A `data:` URL as inline data (its base64 passed through); an `https:` URL as file
    data, which Gemini fetches itself (the media type from the file name's extension,
    when it has one of the contract's)."""
    url = part.image_url.url
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not comma or not media_type or encoding != "base64":
            raise InvalidRequestError(f"{path}: a data: URL must be data:<media type>;base64,<data>", provider=PROVIDER)
        return _InlineDataPart(_Blob(media_type, data))
    if url.startswith("https://"):
        extension = urlsplit(url).path.rpartition(".")[2].lower()
        return _FileDataPart(_FileData(url, IMAGE_TYPES.get(extension)))
    raise InvalidRequestError(f"{path}: gemini takes a data: or https: image URL", provider=PROVIDER)


def too_deep(text: str) -> bool:
    """Whether JSON `text` nests deeper than `MAX_DEPTH` (the request's own limit): decoded
    and encoded again into Gemini's request, it would recurse too far."""
    return text.count("{") + text.count("[") > MAX_DEPTH and nesting_depth(text.encode()) > MAX_DEPTH


def function_call_part(call: ToolCall, path: str, foreign_signature: str | None) -> _FunctionCallPart:
    """An assistant's tool call as a `functionCall` part, with the thought signature its
    id carries (else `foreign_signature`: one sent back as reasoning, or the foreign one)."""
    arguments = call.function.arguments
    if too_deep(arguments):
        raise InvalidRequestError(
            f"{path}.function.arguments: nested deeper than {MAX_DEPTH} levels of objects and arrays", provider=PROVIDER
        )
    try:
        args = _arguments_decoder.decode(arguments) if arguments.strip() else {}
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidRequestError(
            f"{path}.function.arguments: not the JSON text of an object", provider=PROVIDER
        ) from None
    return _FunctionCallPart(_FunctionCall(call.function.name, args), signature_of(call.id) or foreign_signature)


def function_response_part(message: ChatMessage, index: int, call_names: dict[str, str]) -> _FunctionResponsePart:
    """A tool result as a `functionResponse`: named after the call it answers; `response`
    is the result when it is a JSON object, else `{"output": <the text>}` (the key
    Gemini reads as the function's output)."""
    name = call_names.get(message.tool_call_id or "")
    if name is None:
        raise InvalidRequestError(
            f"$.messages[{index}].tool_call_id: answers no tool call of an earlier assistant message", provider=PROVIDER
        )
    text = message.text
    try:
        response = {"output": text} if too_deep(text) else _arguments_decoder.decode(text)
    except (msgspec.DecodeError, msgspec.ValidationError):
        response = {"output": text}
    return _FunctionResponsePart(_FunctionResponse(name, response))


def ending(finish_reason: str | None, block_reason: str | None) -> tuple[FinishReason, GatewayError | None]:
    """Our finish reason for Gemini's, and the failure to report after the final frame:
    a safety stop or a blocked prompt is `content_filter`, an unknown reason an `error`."""
    if finish_reason is None:
        return FinishReason.CONTENT_FILTER, StreamError(
            f"gemini blocked the prompt ({block_reason})", type="content_filter", provider=PROVIDER
        )
    reason = FINISH_REASONS.get(finish_reason, FinishReason.ERROR)
    if reason is FinishReason.CONTENT_FILTER:
        return reason, StreamError(
            f"gemini stopped the answer ({finish_reason})", type="content_filter", provider=PROVIDER
        )
    if reason is FinishReason.ERROR:
        return reason, UpstreamError(f"gemini stopped the answer with finish reason {finish_reason}", provider=PROVIDER)
    return reason, None


def usage_of(metadata: _UsageMetadata | None) -> Usage | None:
    """Gemini's usage as ours. Thinking tokens are billed as output, so `completion_tokens`
    counts them with the answer's (`candidates` + `thoughts`), and `reasoning_tokens` is
    `thoughts` when Gemini reported any; `cached_tokens` its `cachedContentTokenCount` (which
    `promptTokenCount` includes), when not zero."""
    if metadata is None:
        return None
    prompt = metadata.prompt_token_count
    thoughts = metadata.thoughts_token_count
    completion = metadata.candidates_token_count + thoughts
    total = metadata.total_token_count
    return Usage(
        prompt,
        completion,
        total if total is not None else prompt + completion,
        thoughts or None,
        metadata.cached_content_token_count or None,
    )


def error_from_api(error: genai_errors.APIError) -> GatewayError:
    """An upstream error status as the contract's error (Gemini's bad key is a 400)."""
    details = error_details(error.details)
    if error.code in (401, 403) or any(d.get("reason") == "API_KEY_INVALID" for d in details):
        return ProviderAuthError(f"gemini rejected the API key; check {KEY_ENV}", provider=PROVIDER)
    retry_after = error.response.headers.get("retry-after") if error.response is not None else None
    message = error.message or str(error.status or "")
    return error_from_status(
        error.code, message, provider=PROVIDER, key_env=KEY_ENV, retry_after=retry_after or retry_delay(details)
    )


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
