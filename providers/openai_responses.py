"""OpenAI's Responses API upstream: the `/v1/responses` passthrough, and reasoning text for
the native and Chat Completions endpoints.

**The passthrough** (`open_responses_passthrough`): the client's body goes to the `openai`
adapter's upstream as it came (every field, unknown ones too), through the adapter's SDK
client, key and retry policy (`OpenAIStreamAdapter.open_responses`), with the client's
headers of `FORWARDED_HEADERS` (never its `Authorization`: the key is the adapter's). A
stream comes back as one `RawEvent` per upstream SSE event — `event: <type>` and the
`data` JSON exactly as sent — then one final `StreamChunk` read from the terminal event
(`finish_reason` and `Usage`); any other answer (`stream: false`, `GET`, `DELETE`,
`cancel`) as one `RawEvent` holding the upstream's JSON body, then the final chunk. An
error status raises the contract's error carrying the upstream's body (`upstream_body`,
read up to `upstream_http.MAX_ERROR_BODY_BYTES`).

**Reasoning** (`stream_chat`): OpenAI streams reasoning text only here, as reasoning
summaries. A `ChatRequest` with `include_reasoning` to a reasoning model is sent as a
Responses request (`reasoning: {effort, summary: "auto"}`, `store: false`,
`include: ["reasoning.encrypted_content"]`) and its events read into our chunks: summary
deltas → `ReasoningChunk` (a summary's later parts after a blank line), text deltas →
content, `function_call` items → `ToolCallChunk`s, each finished reasoning item's
`encrypted_content` → a `SignatureChunk`, usage from the terminal event.

The signature of an OpenAI reasoning item is `"<item id>:<encrypted_content>"` (the API
takes a reasoning item back only with both). A `ThinkingPart` sent back with such a
signature becomes that reasoning item again; one without a signature, or with another
provider's (no `rs_` id), is dropped: OpenAI could not read it.

This module imports no SDK (the dialects import it when a passthrough is first opened).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

import httpx2
import msgspec

from .. import sse
from ..adapter import ChunkStream
from ..chat_types import (
    ChatMessage,
    ChatRequest,
    Chunk,
    FinishReason,
    ImagePart,
    NamedToolChoice,
    RawEvent,
    ReasoningChunk,
    ReasoningEffort,
    ResponseFormat,
    SignatureChunk,
    StreamChunk,
    TextPart,
    ThinkingPart,
    Tool,
    ToolCallChunk,
    ToolChoice,
    Usage,
    json_encoder,
)
from ..errors import UpstreamError
from .stainless import map_transport_error
from .stream_reader import END, Ending, EventReader, read

if TYPE_CHECKING:
    from .openai_stream import OpenAIStreamAdapter

#: The client request headers a passthrough forwards (lower-case): OpenAI's beta opt-ins
#: and the session, conversation and request ids Codex and the SDKs send. Never
#: `authorization` nor `openai-organization` / `openai-project` (the key and its account
#: are the adapter's), nor the SDK's own (`user-agent`, `x-stainless-*`: ours go).
FORWARDED_HEADERS = frozenset(
    {
        "openai-beta",
        "session-id",
        "session_id",
        "conversation-id",
        "conversation_id",
        "x-client-request-id",
        "originator",
        "idempotency-key",
    }
)
#: The most of a non-streamed answer read (bytes, after decompression); past it the call
#: fails as `upstream_error`.
MAX_ANSWER_BYTES = 32 * 1024 * 1024
#: The events that end a response stream.
TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
#: Output item types that are calls the client runs (a stream ending with one: `tool_calls`).
CLIENT_CALLS = frozenset({"function_call", "custom_tool_call"})
#: What a reasoning request asks to get back: each reasoning item's encrypted content.
ENCRYPTED_REASONING = ["reasoning.encrypted_content"]


# --- the upstream's response object (only what we read) --------------------------------


class _InputDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _OutputDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class _WireUsage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int | None = None
    input_tokens_details: _InputDetails | None = None
    output_tokens_details: _OutputDetails | None = None


class _OutputType(msgspec.Struct):
    type: str = ""


class _IncompleteDetails(msgspec.Struct):
    reason: str | None = None


class _ErrorInfo(msgspec.Struct):
    code: str | None = None
    message: str = ""


class _Response(msgspec.Struct):
    status: str | None = None
    model: str = ""
    output: list[_OutputType] = []
    usage: _WireUsage | None = None
    incomplete_details: _IncompleteDetails | None = None
    error: _ErrorInfo | None = None


class _Item(msgspec.Struct):
    """An output item of `response.output_item.added` / `.done`."""

    type: str = ""
    id: str = ""
    call_id: str = ""  # function_call
    name: str = ""  # function_call
    arguments: str = ""  # function_call
    encrypted_content: str | None = None  # reasoning


class _Event(msgspec.Struct):
    """Any event but a text delta: the fields of the types `_chat_chunks` reads."""

    delta: str = ""
    summary_index: int = 0
    item_id: str = ""
    item: _Item | None = None
    response: _Response | None = None
    code: str | None = None  # error
    message: str = ""  # error


class _Delta(msgspec.Struct):
    delta: str = ""


class _Typed(msgspec.Struct):
    type: str = ""


_response_decoder = msgspec.json.Decoder(_Response)
_event_decoder = msgspec.json.Decoder(_Event)
_delta_decoder = msgspec.json.Decoder(_Delta)
_type_decoder = msgspec.json.Decoder(_Typed)


def _usage(wire: _WireUsage | None) -> Usage | None:
    """Ours; `reasoning_tokens` and `cached_tokens` only when not zero (as on the Chat
    Completions path)."""
    if wire is None:
        return None
    total = wire.total_tokens if wire.total_tokens is not None else wire.input_tokens + wire.output_tokens
    reasoning = wire.output_tokens_details.reasoning_tokens if wire.output_tokens_details is not None else None
    cached = wire.input_tokens_details.cached_tokens if wire.input_tokens_details is not None else None
    return Usage(
        prompt_tokens=wire.input_tokens,
        completion_tokens=wire.output_tokens,
        total_tokens=total,
        reasoning_tokens=reasoning or None,
        cached_tokens=cached or None,
    )


def finish_reason(response: _Response) -> FinishReason:
    """A response's end as ours: `completed` → `stop`, or `tool_calls` when its output
    has a call the client runs; `incomplete` → `length` (`content_filter` when that was
    the reason); `failed` → `error`; any other status (a stored response still running,
    a cancelled one, a deletion's answer) → `stop`."""
    status = response.status
    if status == "failed":
        return FinishReason.ERROR
    if status == "incomplete":
        details = response.incomplete_details
        if details is not None and details.reason == "content_filter":
            return FinishReason.CONTENT_FILTER
        return FinishReason.LENGTH
    if any(item.type in CLIENT_CALLS for item in response.output):
        return FinishReason.TOOL_CALLS
    return FinishReason.STOP


def _final(response: _Response | None, provider: str) -> StreamChunk:
    if response is None:
        return StreamChunk(content="", finish_reason=FinishReason.STOP, model="", provider=provider)
    return StreamChunk(
        content="",
        finish_reason=finish_reason(response),
        model=response.model,
        provider=provider,
        usage=_usage(response.usage),
    )


# --- the passthrough --------------------------------------------------------------------


async def open_responses_passthrough(
    adapter: OpenAIStreamAdapter,
    body: bytes,
    headers: list[tuple[str, str]],
    *,
    stream: bool,
    path: str = "/responses",
    method: str = "POST",
) -> ChunkStream:
    """Send `body` as it came (`method` on `path` under the adapter's base URL, e.g.
    `GET /responses/{id}?stream=true&starting_after=3`) with the client's `headers` of
    `FORWARDED_HEADERS`; return once the upstream answered with a `2xx`, else raise the
    contract's error with the upstream's body in `upstream_body`. `stream`: the answer is
    an event stream (`RawEvent` per event), else one JSON body (one `RawEvent`); either
    way the final `StreamChunk` follows."""
    forwarded = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in headers
        if name.lower() in FORWARDED_HEADERS
    ]
    chunks, release = await adapter.open_responses(body, forwarded, method=method, path=path, keep_error_body=True)
    reader = _relay(chunks, adapter.name) if stream else _answer(chunks, adapter.name)
    return ChunkStream(reader, release)


def _frame(name: str, data: str) -> bytes:
    """One event as sent: `event: <type>`, its data (one line, as OpenAI sends it; a
    multi-line one as several `data:` lines), a blank line."""
    if "\n" in data:
        data = data.replace("\n", "\ndata: ")
    return b"event: %b\ndata: %b\n\n" % (name.encode(), data.encode())


def _relay(chunks: AsyncIterator[bytes], provider: str) -> AsyncGenerator[Chunk, None]:
    """Each upstream event as a `RawEvent`, then the final chunk (`RelayedEvents`)."""
    return read(chunks, RelayedEvents(provider))


class RelayedEvents(EventReader):
    """Each event as a `RawEvent` (`token`: a `*.delta`), then the final chunk of the terminal
    event. An `error` event the upstream sent without a terminal one after it ends the
    stream with `finish_reason: error` (the client has the upstream's own error); a stream
    cut before either is an `upstream_error`."""

    __slots__ = ("response", "failed")

    def __init__(self, provider: str) -> None:
        super().__init__(provider)
        self.response: _Response | None = None
        self.failed = False

    def on_event(self, event: sse.Event) -> Chunk | Ending | None:
        name, data = event.event, event.data
        if name == "message":  # no `event:` line: the type is in the data
            name = _type_of(data)
        if name in TERMINAL_EVENTS:
            self.more.append(RawEvent(_frame(name, data), name.endswith(".delta")))
            self.response = _terminal(data)
            return END
        if name == "error":
            self.failed = True
        return RawEvent(_frame(name, data), name.endswith(".delta"))

    def final(self, ended: bool) -> StreamChunk:
        if ended:
            return _final(self.response, self.provider)
        if not self.failed:
            raise _cut(self.provider)
        return StreamChunk(content="", finish_reason=FinishReason.ERROR, model="", provider=self.provider)


async def _answer(chunks: AsyncIterator[bytes], provider: str) -> AsyncGenerator[Chunk, None]:
    """The whole JSON body as one `RawEvent` (up to `MAX_ANSWER_BYTES`), then the final chunk."""
    parts: list[bytes] = []
    size = 0
    try:
        async for part in chunks:
            size += len(part)
            if size > MAX_ANSWER_BYTES:
                raise UpstreamError(f"{provider} answered with a body over {MAX_ANSWER_BYTES} bytes", provider=provider)
            parts.append(part)
    except httpx2.RequestError as error:
        raise map_transport_error(error, provider=provider) from None
    body = b"".join(parts)
    yield RawEvent(body)
    yield _final(_decoded_response(body), provider)


def _type_of(data: str) -> str:
    try:
        return _type_decoder.decode(data).type or "message"
    except msgspec.DecodeError:
        return "message"


def _terminal(data: str) -> _Response | None:
    """The response of a terminal event; `None` if it cannot be read (the passthrough
    passes what came; only our usage figures are lost)."""
    try:
        return _event_decoder.decode(data).response
    except msgspec.DecodeError:  # a `ValidationError` too
        return None


def _decoded_response(body: bytes) -> _Response | None:
    """The response object of a non-streamed answer (a deletion's answer reads as one
    with no status); `None` if the body is not one."""
    try:
        return _response_decoder.decode(body)
    except msgspec.DecodeError:  # a `ValidationError` too
        return None


# --- reasoning for the native and Chat Completions endpoints: the request -----------------


class _Reasoning(msgspec.Struct, omit_defaults=True):
    summary: Literal["auto"]
    effort: ReasoningEffort | None = None


class _InputText(msgspec.Struct, tag="input_text", tag_field="type"):
    text: str


class _InputImage(msgspec.Struct, tag="input_image", tag_field="type"):
    image_url: str
    detail: str


class _Message(msgspec.Struct, tag="message", tag_field="type"):
    role: Literal["developer", "user", "assistant"]
    content: str | list[_InputText | _InputImage]


class _SummaryText(msgspec.Struct, tag="summary_text", tag_field="type"):
    text: str


class _ReasoningItem(msgspec.Struct, tag="reasoning", tag_field="type"):
    id: str
    summary: list[_SummaryText]
    encrypted_content: str


class _FunctionCall(msgspec.Struct, tag="function_call", tag_field="type"):
    call_id: str
    name: str
    arguments: str


class _FunctionCallOutput(msgspec.Struct, tag="function_call_output", tag_field="type"):
    call_id: str
    output: str


_InputItem = _Message | _ReasoningItem | _FunctionCall | _FunctionCallOutput


class _FunctionTool(msgspec.Struct, tag="function", tag_field="type"):
    """`strict` is always sent: the Responses API's default is `true`, Chat Completions'
    (whose meaning our request has) `false`."""

    name: str
    parameters: dict[str, Any] | None
    strict: bool
    description: str | None = None


class _NamedFunction(msgspec.Struct, tag="function", tag_field="type"):
    name: str


class _TextFormat(msgspec.Struct, omit_defaults=True):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class _TextConfig(msgspec.Struct):
    format: _TextFormat


class _Request(msgspec.Struct, omit_defaults=True):
    model: str
    input: list[_InputItem]
    stream: bool
    store: bool
    include: list[str]
    reasoning: _Reasoning
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    text: _TextConfig | None = None
    tools: list[_FunctionTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | _NamedFunction | None = None


def responses_request(request: ChatRequest, model: str, effort: ReasoningEffort | None) -> _Request:
    """Our request as a streamed, unstored Responses request asking for reasoning
    summaries and encrypted reasoning. `effort` `None`: the model's own default. (`stop`
    has no Responses form: such a request never comes here, see `uses_responses_api`.)"""
    wire = _Request(
        model=model,
        input=input_items(request.messages),
        stream=True,
        store=False,
        include=ENCRYPTED_REASONING,
        reasoning=_Reasoning(summary="auto", effort=effort),
        max_output_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
    )
    if request.response_format is not None:
        wire.text = _TextConfig(_text_format(request.response_format))
    if request.tools:
        wire.tools = [_function_tool(tool) for tool in request.tools]
        if request.tool_choice is not None:
            wire.tool_choice = _tool_choice(request.tool_choice)
    return wire


def input_items(messages: list[ChatMessage]) -> list[_InputItem]:
    """Messages as input items, in order: system messages as `developer` messages; an
    assistant turn as its reasoning items, its text, its `function_call`s; a `tool`
    message as a `function_call_output`."""
    items: list[_InputItem] = []
    for message in messages:
        role = message.role
        if role == "system":
            items.append(_Message(role="developer", content=message.text))
        elif role == "user":
            items.append(_Message(role="user", content=_content(message.content)))
        elif role == "tool":
            items.append(_FunctionCallOutput(call_id=message.tool_call_id or "", output=message.text))
        else:
            if message.thinking:
                items.extend(item for part in message.thinking if (item := reasoning_item(part)) is not None)
            text = message.text
            if text or not message.tool_calls:
                items.append(_Message(role="assistant", content=text))
            for call in message.tool_calls or ():
                items.append(_FunctionCall(call_id=call.id, name=call.function.name, arguments=call.function.arguments))
    return items


def reasoning_item(part: ThinkingPart) -> _ReasoningItem | None:
    """The reasoning item a `ThinkingPart` came from (its signature `"<id>:<encrypted>"`);
    `None` for one OpenAI did not sign."""
    item_id, colon, encrypted = (part.signature or "").partition(":")
    if part.redacted or not colon or not item_id.startswith("rs_") or not encrypted:
        return None
    return _ReasoningItem(
        id=item_id, summary=[_SummaryText(part.text)] if part.text else [], encrypted_content=encrypted
    )


def reasoning_signature(item_id: str, encrypted_content: str) -> str:
    """The `SignatureChunk` of a finished reasoning item (`reasoning_item` reads it back)."""
    return f"{item_id}:{encrypted_content}"


def _content(content: str | list[TextPart | ImagePart] | None) -> str | list[_InputText | _InputImage]:
    if content is None or type(content) is str:
        return content or ""
    parts: list[_InputText | _InputImage] = []
    for part in content:
        if type(part) is TextPart:
            parts.append(_InputText(part.text))
        else:
            image = part.image_url  # type: ignore[union-attr]
            parts.append(_InputImage(image_url=image.url, detail=image.detail or "auto"))
    return parts


def _function_tool(tool: Tool) -> _FunctionTool:
    function = tool.function
    return _FunctionTool(
        name=function.name,
        parameters=function.parameters,
        strict=bool(function.strict),
        description=function.description,
    )


def _tool_choice(choice: ToolChoice) -> Literal["auto", "none", "required"] | _NamedFunction:
    if type(choice) is NamedToolChoice:
        return _NamedFunction(choice.function.name)
    return choice  # type: ignore[return-value]


def _text_format(response_format: ResponseFormat) -> _TextFormat:
    schema = response_format.json_schema
    if response_format.type != "json_schema" or schema is None:
        return _TextFormat(type=response_format.type)
    return _TextFormat(
        type="json_schema",
        name=schema.name,
        schema=schema.schema or {"type": "object"},
        description=schema.description,
        strict=schema.strict,
    )


# --- reasoning for the native and Chat Completions endpoints: the stream ------------------


async def stream_chat(adapter: OpenAIStreamAdapter, request: ChatRequest, model: str) -> ChunkStream:
    """`request` through the upstream's Responses API (`OpenAIStreamAdapter.stream_chat`
    calls this when `uses_responses_api`), read into our chunks."""
    body = json_encoder.encode(responses_request(request, model, adapter.reasoning_effort(request, model)))
    chunks, release = await adapter.open_responses(body)
    return ChunkStream(_chat_chunks(chunks, model, adapter.name), release)


def _chat_chunks(chunks: AsyncIterator[bytes], model: str, provider: str) -> AsyncGenerator[Chunk, None]:
    """The Responses events as our chunks (`ResponseEvents`); the final one from the
    terminal event."""
    return read(chunks, ResponseEvents(model, provider))


class ResponseEvents(EventReader):
    """The events of one Responses stream as our chunks: text (and refusal) deltas as
    content, reasoning summary deltas as reasoning (a summary's later parts after a blank
    line), `function_call` items as calls, each finished reasoning item's encrypted content
    as a signature. The final chunk is read from the terminal event; a `response.failed` or
    an `error` event is an `upstream_error` with OpenAI's message."""

    __slots__ = ("model", "calls", "silent", "response")

    def __init__(self, model: str, provider: str) -> None:
        super().__init__(provider)
        self.model = model
        self.calls: dict[str, int] = {}  # a function_call item's id → its call index
        self.silent: set[str] = set()  # function_call items whose arguments did not stream yet
        self.response = _Response()

    def on_event(self, event: sse.Event) -> Chunk | Ending | None:
        name = event.event
        if name == "response.output_text.delta" or name == "response.refusal.delta":
            delta = _delta_decoder.decode(event.data).delta
            if not delta:
                return None
            return StreamChunk(content=delta, finish_reason=None, model=self.model, provider=self.provider)
        if name == "response.reasoning_summary_text.delta":
            delta = _delta_decoder.decode(event.data).delta
            if not delta:
                return None
            return ReasoningChunk(reasoning=delta, model=self.model, provider=self.provider)
        if name == "response.function_call_arguments.delta":
            return self.arguments(_event_decoder.decode(event.data))
        if name == "response.output_item.added":
            return self.item_added(_event_decoder.decode(event.data).item)
        if name == "response.output_item.done":
            return self.item_done(_event_decoder.decode(event.data).item)
        if name == "response.reasoning_summary_part.added":
            if _event_decoder.decode(event.data).summary_index > 0:  # a new paragraph of the summary
                return ReasoningChunk(reasoning="\n\n", model=self.model, provider=self.provider)
        elif name in TERMINAL_EVENTS:
            self.response = _event_decoder.decode(event.data).response or _Response()
            if name == "response.failed":
                raise _failed(self.response.error, self.provider)
            return END
        elif name == "error":
            data = _event_decoder.decode(event.data)
            raise _failed(_ErrorInfo(code=data.code, message=data.message), self.provider)
        return None

    def arguments(self, data: _Event) -> ToolCallChunk | None:
        index = self.calls.get(data.item_id)
        if index is None or not data.delta:
            return None
        self.silent.discard(data.item_id)
        return ToolCallChunk(index=index, arguments=data.delta)

    def item_added(self, item: _Item | None) -> ToolCallChunk | None:
        if item is None or item.type != "function_call":
            return None
        index = self.calls[item.id] = len(self.calls)
        if item.arguments:
            self.silent.discard(item.id)
        else:
            self.silent.add(item.id)
        return ToolCallChunk(index=index, id=item.call_id, name=item.name, arguments=item.arguments)

    def item_done(self, item: _Item | None) -> Chunk | None:
        if item is None:
            return None
        if item.type == "reasoning" and item.encrypted_content:
            return SignatureChunk(signature=reasoning_signature(item.id, item.encrypted_content))
        if item.type != "function_call" or item.id not in self.silent:
            return None
        self.silent.discard(item.id)  # its arguments came whole
        return ToolCallChunk(index=self.calls[item.id], arguments=item.arguments) if item.arguments else None

    def final(self, ended: bool) -> StreamChunk:
        if not ended:
            raise _cut(self.provider)
        reason = finish_reason(self.response)
        if self.calls and reason is FinishReason.STOP:
            reason = FinishReason.TOOL_CALLS
        usage = _usage(self.response.usage)
        return StreamChunk(content="", finish_reason=reason, model=self.model, provider=self.provider, usage=usage)


def _cut(provider: str) -> UpstreamError:
    return UpstreamError(f"{provider} ended the stream before its response.completed", provider=provider)


def _failed(error: _ErrorInfo | None, provider: str) -> UpstreamError:
    message = (error.message or error.code or "") if error is not None else ""
    return UpstreamError(f"{provider} failed mid-stream: {message or 'unknown error'}", provider=provider)
