"""The OpenAI-compatible dialect: `POST /v1/chat/completions`, `GET /v1/models` and
`GET /v1/models/{model}`.

An OpenAI client's request is translated to our `ChatRequest` and goes through the same
pipeline as `/api/v1/chat/stream` (`pipeline.run_chat`); only the framing differs:
`OpenAIFrames` writes `chat.completion.chunk` objects, `send_answer` a `chat.completion`,
`send_openai_error` OpenAI's `{"error": {"message", "type", "param", "code"}}`.

`model` is `"<provider>/<model>"` or a bare name, which goes to `openai`
(`Gateway.resolve`).
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any, Literal

import msgspec
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from .. import sse
from ..catalog import Catalog
from ..chat_types import (
    ChatMessage,
    ChatRequest,
    ImagePart,
    RawEvent,
    ReasoningChunk,
    ReasoningEffort,
    ResponseFormat,
    SignatureChunk,
    StopSequence,
    StreamChunk,
    TextPart,
    Tool,
    ToolCall,
    ToolCallChunk,
    ToolChoice,
    Usage,
    json_encoder,
)
from ..errors import GatewayError, ProviderNotConfiguredError
from ..gateway import Gateway, translated
from ..pipeline import Call, ChatEndpoint, CollectedAnswer, decode_json, error_headers, send_json
from ..request_checks import check_request
from ..resume import CancelEndpoint, NumberedFrames, ResumeEndpoint
from . import anthropic_messages

#: Our contract's error `type` → the `type` OpenAI clients expect; our type goes in `code`.
OPENAI_ERROR_TYPES = {
    "invalid_json": "invalid_request_error",
    "invalid_request": "invalid_request_error",
    "unsupported_parameter": "invalid_request_error",
    "unknown_provider": "invalid_request_error",
    "model_not_supported": "invalid_request_error",
    "body_too_large": "invalid_request_error",
    "unauthorized": "authentication_error",
    "provider_auth_error": "authentication_error",
    "provider_not_configured": "invalid_request_error",
    "rate_limited": "rate_limit_error",
}
#: `error.code` of a provider that has no key configured (`errors.ProviderNotConfiguredError`).
PROVIDER_NOT_CONFIGURED = "provider_not_configured"

#: OpenAI request fields streamgate cannot honour: refused (400) unless their value is one
#: that asks for nothing we cannot do. The legacy `functions` / `function_call` are
#: refused too: `tools` / `tool_choice` say the same.
UNSUPPORTED_FIELDS = ("functions", "function_call", "n", "logprobs", "top_logprobs", "audio", "modalities")
_HARMLESS: dict[str, tuple[Any, ...]] = {
    "function_call": (None, "none", "auto"),
    "n": (None, 1),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "modalities": (None, ["text"]),
}
#: The roles our `ChatMessage` has, whose string content needs no translation.
_NATIVE_ROLES = frozenset({"system", "user", "assistant", "tool"})


# --- the request ----------------------------------------------------------------------


class AudioPart(msgspec.Struct, frozen=True, tag="input_audio", tag_field="type"):
    """An audio input part: decoded only to be refused by name."""


class FilePart(msgspec.Struct, frozen=True, tag="file", tag_field="type"):
    """A file input part: decoded only to be refused by name."""


class CompletionMessage(ChatMessage, frozen=True):
    """An OpenAI message. It is a `ChatMessage` (same fields, same wire shape), so a
    decoded message goes into our `ChatRequest` as it is, with no copy; only OpenAI's
    wider role set and its non-text input parts are translated or refused
    (`translate_message`)."""

    # Wider than `ChatMessage`'s on purpose: `translate_message` narrows what it lets through.
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]  # type: ignore[assignment]
    content: str | list[TextPart | ImagePart | AudioPart | FilePart] | None = None  # type: ignore[assignment]


class StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class CompletionRequest(msgspec.Struct):
    """The fields of OpenAI's chat completion request we read, decoded straight into our
    own types where the shapes are OpenAI's; unknown fields are ignored.

    Two extra body fields: `resumable` (as on the native endpoint) and
    `include_reasoning`, on by default here: reasoning text, when the upstream exposes
    it, streams as `delta.reasoning_content` (clients that do not know the field skip it).
    """

    messages: Annotated[list[CompletionMessage], msgspec.Meta(min_length=1)]
    model: Annotated[str, msgspec.Meta(min_length=1)]
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    reasoning_effort: ReasoningEffort | None = None
    include_reasoning: bool = True
    stop: StopSequence | Annotated[list[StopSequence], msgspec.Meta(min_length=1, max_length=4)] | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    resumable: bool = False
    functions: Any = None
    function_call: Any = None
    n: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    audio: Any = None
    modalities: Any = None


completion_request_decoder = msgspec.json.Decoder(CompletionRequest)


class UnsupportedParameterError(GatewayError):
    """A field OpenAI defines that streamgate cannot honour: refused, never dropped."""

    status, type = 400, "unsupported_parameter"


class ModelNotFoundError(GatewayError):
    """`GET /v1/models/{model}` for an id `/v1/models` does not list: OpenAI's own 404, so
    the SDK raises `openai.NotFoundError`."""

    status, type = 404, "model_not_found"


def check_supported(request: CompletionRequest) -> None:
    for field in UNSUPPORTED_FIELDS:
        value = getattr(request, field)
        if value and value not in _HARMLESS.get(field, (None,)):
            raise UnsupportedParameterError(
                f"$.{field}: {field}{'' if isinstance(value, (list, dict)) else f'={value!r}'} is not "
                f"supported by streamgate{' (use tools and tool_choice)' if 'function' in field else ''}; omit it"
            )


def translate_message(message: CompletionMessage, index: int) -> CompletionMessage:
    """`developer` → `system`; an assistant's missing content → `""` (unless it carries
    calls); the legacy `function` role and audio or file parts refused by name."""
    if message.role == "function":
        raise UnsupportedParameterError(
            f"$.messages[{index}].role: the legacy role 'function' is not supported; "
            f"answer a tool call with a 'tool' message"
        )
    content = message.content
    if type(content) is list:
        for part_index, part in enumerate(content):
            if type(part) is AudioPart or type(part) is FilePart:
                raise UnsupportedParameterError(
                    f"$.messages[{index}].content[{part_index}].type: {part.__struct_config__.tag!r} parts "
                    f"are not supported; send text and image_url parts"
                )
    if message.role == "developer":
        return msgspec.structs.replace(message, role="system")
    if content is None and message.role == "assistant" and not message.tool_calls:
        return msgspec.structs.replace(message, content="")
    return message


def to_chat_request(request: CompletionRequest, provider: str, model: str) -> ChatRequest:
    """Our request for an OpenAI one (`max_completion_tokens` wins over `max_tokens`).
    The decoded messages are ours already; only those `translate_message` changes are
    replaced."""
    messages = request.messages
    for index, message in enumerate(messages):
        if message.role not in _NATIVE_ROLES or type(message.content) is not str:
            messages[index] = translate_message(message, index)
    return ChatRequest(
        messages=messages,  # type: ignore[arg-type]  # a CompletionMessage is a ChatMessage
        provider=provider,
        model=model,
        temperature=request.temperature,
        max_tokens=request.max_completion_tokens or request.max_tokens,
        reasoning_effort=request.reasoning_effort,
        include_reasoning=request.include_reasoning,
        stop=request.stop,
        response_format=request.response_format,
        tools=request.tools,
        tool_choice=request.tool_choice,
        resumable=request.resumable,
    )


# --- the answer -----------------------------------------------------------------------


class AssistantMessage(msgspec.Struct, omit_defaults=True):
    role: str
    content: str | None
    tool_calls: list[ToolCall] | None = None
    reasoning_content: str | None = None


class CompletionTokensDetails(msgspec.Struct):
    reasoning_tokens: int


class PromptTokensDetails(msgspec.Struct):
    cached_tokens: int


class CompletionUsage(msgspec.Struct, omit_defaults=True):
    """OpenAI's `usage`: the reasoning count goes in `completion_tokens_details`, the
    prompt-cache reads in `prompt_tokens_details`."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails | None = None
    prompt_tokens_details: PromptTokensDetails | None = None

    @classmethod
    def of(cls, usage: Usage | None) -> CompletionUsage | None:
        if usage is None:
            return None
        details = None if usage.reasoning_tokens is None else CompletionTokensDetails(usage.reasoning_tokens)
        cached = None if usage.cached_tokens is None else PromptTokensDetails(usage.cached_tokens)
        return cls(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, details, cached)


class CompletionChoice(msgspec.Struct):
    index: int
    message: AssistantMessage
    finish_reason: str


class ChatCompletion(msgspec.Struct, kw_only=True):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage | None


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


def error_body(error: GatewayError) -> bytes:
    """OpenAI's error shape; `code` is our contract's type (`provider_not_configured` for a
    provider without a key), `param` the field at fault."""
    code = PROVIDER_NOT_CONFIGURED if isinstance(error, ProviderNotConfiguredError) else error.type
    status_type = "invalid_request_error" if error.status < 500 else "api_error"
    kind = OPENAI_ERROR_TYPES.get(code, status_type)
    param = "model" if error.type in ("model_not_supported", "model_not_found") else None
    if error.message.startswith("$."):
        param = error.message[2:].partition(":")[0]
    return json_encoder.encode(ErrorBody(ErrorDetail(error.message, kind, param, code)))


def openai_status(error: GatewayError) -> int:
    """The status OpenAI's own API would answer, so that SDK users' `except` clauses work:
    a request the gateway refuses as malformed (our 422s) is a 400 (`BadRequestError`), and
    so is a provider without a key (a 401 here means the gateway's own key)."""
    if error.status == 422 or isinstance(error, ProviderNotConfiguredError):
        return 400
    return error.status


async def send_openai_error(send: Send, error: GatewayError) -> None:
    await send_json(send, openai_status(error), error_body(error), error_headers(error))


class ToolCallFunctionDelta(msgspec.Struct, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(msgspec.Struct, omit_defaults=True):
    """One entry of `delta.tool_calls`: `id`, `type` and `function.name` on a call's
    first delta, `function.arguments` fragments after."""

    index: int
    function: ToolCallFunctionDelta
    id: str | None = None
    type: str | None = None


class OpenAIFrames:
    """One completion as `chat.completion.chunk` frames (the `pipeline.Frames` protocol).

    Every chunk's bytes up to the delta's text are built once, so a frame costs one JSON
    string encode and a concatenation. The first delta carries `role`, the final chunk
    `finish_reason`, and with `include_usage` one more chunk with empty `choices` carries
    `usage`. A failure is one `data: {"error": ...}` line and the end of the stream (no
    `[DONE]`): the OpenAI SDK raises `APIError` on it.
    """

    __slots__ = (
        "completion_id",
        "created",
        "model",
        "include_usage",
        "head",
        "_content_head",
        "_choices_head",
        "_usage_head",
        "final_sent",
    )

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        self.completion_id = completion_id
        self.created = created
        self.model = model
        self.include_usage = include_usage
        self.final_sent = False
        self._heads()

    def _heads(self) -> None:
        """Every chunk's bytes up to its delta, for this completion's id and model."""
        base = b'data: {"id":%b,"object":"chat.completion.chunk","created":%d,"model":%b,"choices":[' % (
            json_encoder.encode(self.completion_id),
            self.created,
            json_encoder.encode(self.model),
        )
        self._choices_head = base + b'{"index":0,"delta":'
        self._content_head = self._choices_head + b'{"content":'
        self._usage_head = base + b'],"usage":'
        #: The head of the next content frame: the first one also carries the role.
        self.head = self._choices_head + b'{"role":"assistant","content":'

    def serve(self, provider: str, model: str) -> None:
        """A route's target serves the completion (before its first chunk): `model` names it."""
        self.model = f"{provider}/{model}"
        self._heads()

    def content(self, chunk: StreamChunk) -> bytes:
        head, self.head = self.head, self._content_head
        return head + json_encoder.encode(chunk.content) + b'},"finish_reason":null}]}\n\n'

    def reasoning(self, chunk: ReasoningChunk) -> bytes:
        return self._delta(b'"reasoning_content":%b' % json_encoder.encode(chunk.reasoning))

    def tool_call(self, chunk: ToolCallChunk) -> bytes:
        delta = ToolCallDelta(
            chunk.index,
            ToolCallFunctionDelta(chunk.name, chunk.arguments),
            chunk.id,
            None if chunk.id is None else "function",
        )
        return self._delta(b'"tool_calls":[%b]' % json_encoder.encode(delta))

    def _delta(self, fields: bytes) -> bytes:
        """A chunk whose delta holds `fields` (and `role` on the completion's first delta)."""
        role = b'"role":"assistant",' if self.head is not self._content_head else b""
        self.head = self._content_head
        return b'%b{%b%b},"finish_reason":null}]}\n\n' % (self._choices_head, role, fields)

    def final(self, chunk: StreamChunk) -> bytes:
        self.final_sent = True
        delta = b"{}" if self.head is self._content_head else b'{"role":"assistant","content":""}'
        frame = b'%b%b,"finish_reason":%b}]}\n\n' % (
            self._choices_head,
            delta,
            json_encoder.encode(chunk.finish_reason),
        )
        if self.include_usage:
            frame += b"%b%b}\n\n" % (self._usage_head, json_encoder.encode(CompletionUsage.of(chunk.usage)))
        return frame

    def signature(self, chunk: SignatureChunk) -> bytes:
        return b""  # the dialect has no place for it

    def raw(self, chunk: RawEvent) -> bytes:
        return chunk.data

    def failure(self, error: GatewayError, final_sent: bool, usage: Usage | None) -> bytes:
        return sse.data_frame(error_body(error))

    def done(self) -> bytes:
        return sse.DONE

    async def send_answer(self, send: Send, answer: CollectedAnswer) -> None:
        """The same completion, not streamed: one `chat.completion` object."""
        final = answer.final
        content = answer.content if answer.content or not answer.tool_calls else None
        message = AssistantMessage(
            "assistant", content, tool_calls=answer.tool_calls, reasoning_content=answer.reasoning
        )
        choice = CompletionChoice(0, message, final.finish_reason or "stop")
        completion = ChatCompletion(
            id=self.completion_id,
            created=self.created,
            model=self.model,
            choices=[choice],
            usage=CompletionUsage.of(final.usage),
        )
        await send_json(send, 200, json_encoder.encode(completion))


class NumberedOpenAIFrames(NumberedFrames[OpenAIFrames]):
    """The chunks of a resumable completion, numbered (`NumberedFrames`)."""

    __slots__ = ()

    def serve(self, provider: str, model: str) -> None:
        self.frames.serve(provider, model)

    def meta(self) -> dict[str, Any]:
        frames = self.frames
        return {
            "dialect": "openai",
            "completion_id": frames.completion_id,
            "created": frames.created,
            "model": frames.model,
            "include_usage": frames.include_usage,
        }

    @classmethod
    def restore(cls, meta: dict[str, Any]) -> NumberedOpenAIFrames:
        return cls(OpenAIFrames(meta["completion_id"], meta["created"], meta["model"], meta["include_usage"]))


# --- the endpoints --------------------------------------------------------------------


class OpenAIChatDialect:
    """`POST /v1/chat/completions`: OpenAI's request translated to ours, OpenAI's frames."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def prepare(self, body: bytes, scope: Scope) -> Call:
        completion: CompletionRequest = decode_json(body, completion_request_decoder)
        check_supported(completion)
        targets = self.gateway.targets(completion.model, "openai")
        first = targets[0]
        request = to_chat_request(completion, first.adapter.name, first.model)
        check_request(request)
        options = completion.stream_options
        include_usage = bool(options and options.include_usage)
        plain = OpenAIFrames(f"chatcmpl-{secrets.token_hex(12)}", int(time.time()), completion.model, include_usage)
        frames = NumberedOpenAIFrames(plain) if request.resumable else plain

        return Call(
            provider=first.adapter.name,
            model=first.model,
            open=self.gateway.opener(targets, translated(request)),
            frames=frames,
            streaming=bool(completion.stream),
            resumable=request.resumable,
            send_answer=plain.send_answer,
            requested_model=completion.model,
        )

    send_error = staticmethod(send_openai_error)
    error_status = staticmethod(openai_status)


class ModelCard(msgspec.Struct):
    id: str
    created: int
    owned_by: str
    object: str = "model"


class ModelList(msgspec.Struct):
    data: list[ModelCard]
    object: str = "list"


class ModelCards:
    """The `/v1/models` list and each model's card, encoded once per catalog version:
    `<provider>/<model>` for every model of each configured provider."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.version = -1
        self.list_body = b""
        self.card_bodies: dict[str, bytes] = {}

    def current(self) -> ModelCards:
        catalog = self.catalog
        if self.version != catalog.version:
            cards = [
                ModelCard(f"{name}/{model}", catalog.created, name)
                for name, adapter in catalog.adapters.items()
                if adapter.configured
                for model in catalog.models[name]
            ]
            self.list_body = json_encoder.encode(ModelList(cards))
            self.card_bodies = {card.id: json_encoder.encode(card) for card in cards}
            self.version = catalog.version
        return self


class ModelsEndpoint:
    """`GET /v1/models`: the catalog's models of each configured provider (in Anthropic's
    shape for a client that sends `anthropic-version`)."""

    def __init__(self, cards: ModelCards) -> None:
        self.cards = cards

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if anthropic_messages.wants_anthropic_shape(scope):
            await send_json(send, 200, anthropic_messages.model_list(self.cards.catalog, scope))
            return
        await send_json(send, 200, self.cards.current().list_body)


class ModelEndpoint:
    """`GET /v1/models/{model:path}` (the SDK's `models.retrieve`): the card `/v1/models`
    lists for that id, or a 404 `model_not_found`. The id may hold `/`s
    (`llama4/meta-llama/…`); the SDK sends them as `%2F`, which the server decodes."""

    def __init__(self, cards: ModelCards) -> None:
        self.cards = cards

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        model: str = scope["path_params"]["model"]
        anthropic = anthropic_messages.wants_anthropic_shape(scope)
        if anthropic:
            body = anthropic_messages.model_card(self.cards.catalog, model)
        else:
            body = self.cards.current().card_bodies.get(model)
        if body is None:
            send_not_found = anthropic_messages.send_anthropic_error if anthropic else send_openai_error
            await send_not_found(
                send,
                ModelNotFoundError(
                    f"the model {model!r} does not exist on this gateway; GET /v1/models lists the ids it serves"
                ),
            )
            return
        await send_json(send, 200, body)


def routes(gateway: Gateway) -> list[BaseRoute]:
    cards = ModelCards(gateway.catalog)
    streams = gateway.streams
    return [
        Route(
            "/v1/chat/completions",
            ChatEndpoint(OpenAIChatDialect(gateway), gateway.settings, streams),
            methods=["POST"],
        ),
        Route("/v1/chat/completions/{stream_id}/stream", ResumeEndpoint(streams, send_openai_error), methods=["GET"]),
        Route(
            "/v1/chat/completions/{stream_id}/stream", CancelEndpoint(streams, send_openai_error), methods=["DELETE"]
        ),
        Route("/v1/models", ModelsEndpoint(cards), methods=["GET"]),
        Route("/v1/models/{model:path}", ModelEndpoint(cards), methods=["GET"]),
    ]


RESTORERS = {"openai": NumberedOpenAIFrames.restore}
ERROR_SENDERS = {"/v1/": send_openai_error}
