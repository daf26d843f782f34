"""The Anthropic Messages dialect: `POST /v1/messages`, `POST /v1/messages/count_tokens`,
and the resume routes of its streams (`GET`/`DELETE /v1/messages/{id}/stream`).

`model` picks the targets (`Gateway.targets`, a bare name meaning `anthropic`). To
`anthropic` the request is passed through (`providers/anthropic_passthrough.py`): the body
as it came, the client's `anthropic-*` headers, the upstream's events back as they came.
To every other provider it is translated to our `ChatRequest` (`to_chat_request`) and the
chunks back to Anthropic's events (`MessagesFrames`): `message_start`, per block
`content_block_start` / `content_block_delta` / `content_block_stop`, `message_delta`,
`message_stop`. Errors are Anthropic's shape and statuses (`anthropic_status`).

Wire details the contract leaves open:
- `stop_reason`: `stop` → `end_turn` (no provider we translate to tells a stop sequence
  from a natural end), `length` → `max_tokens`, `tool_calls` → `tool_use`,
  `content_filter` → `refusal`.
- `message_start` carries the `count_tokens` estimate as `input_tokens` (the providers we
  translate to report the real count only at the end); `message_delta` carries the
  upstream's counts: `input_tokens` without the cache reads and writes, which go in
  `cache_read_input_tokens` / `cache_creation_input_tokens`, as Anthropic counts them.
- A provider's reasoning signature (Gemini's `thoughtSignature`) ends the `thinking` block
  streaming the reasoning, or comes as a `thinking` block of its own with empty text;
  sent back, it reaches the provider again (`ThinkingPart`). Thinking blocks without a
  signature, or for a provider that takes none back, are dropped.
- `resumable: true` (an extra body field, never sent upstream) makes the stream resumable
  as on the other endpoints; its frames carry `id:` lines 1, 2, 3, ….
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from ..adapter import ChunkStream
from ..chat_types import (
    ChatMessage,
    ChatRequest,
    ContentPart,
    FinishReason,
    FunctionCall,
    FunctionDefinition,
    ImagePart,
    ImageURL,
    JSONSchemaFormat,
    NamedFunction,
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
    ToolCall,
    ToolCallChunk,
    ToolChoice,
    Usage,
    json_encoder,
)
from ..errors import GatewayError, InvalidRequestError, ProviderNotConfiguredError
from ..gateway import Gateway, Target
from ..pipeline import (
    LOG_FIELDS,
    Call,
    ChatEndpoint,
    ClientGone,
    CollectedAnswer,
    decode_json,
    error_headers,
    read_body,
    send_json,
)
from ..request_checks import check_request
from ..resume import CancelEndpoint, NumberedFrames, ResumeEndpoint

if TYPE_CHECKING:
    from ..catalog import Catalog
    from ..providers.anthropic_passthrough import AnthropicPassthrough

PROVIDER = "anthropic"

# --- errors ---------------------------------------------------------------------------------

#: HTTP status → Anthropic's error `type` (and the status it is answered with).
ERROR_TYPES = {
    400: ("invalid_request_error", 400),
    401: ("authentication_error", 401),
    403: ("permission_error", 403),
    404: ("not_found_error", 404),
    413: ("request_too_large", 413),
    422: ("invalid_request_error", 400),
    429: ("rate_limit_error", 429),
    503: ("overloaded_error", 529),
    529: ("overloaded_error", 529),
    504: ("api_error", 504),
}


def anthropic_error(error: GatewayError) -> tuple[str, int]:
    """Anthropic's error `type` and status for `error`: a provider without a key is the
    request's fault (400; a 401 means the gateway's own key), any other 4xx by its status,
    a timeout `api_error` 504, a server shutting down `overloaded_error` 529, any other
    failure `api_error` 500."""
    if isinstance(error, ProviderNotConfiguredError):
        return "invalid_request_error", 400
    known = ERROR_TYPES.get(error.status)
    if known is not None:
        return known
    if error.status < 500:
        return "invalid_request_error", error.status
    return "api_error", 500


def error_body(error: GatewayError) -> bytes:
    """`{"type": "error", "error": {"type", "message"}}`; Anthropic's own body as it came."""
    if error.upstream_body is not None:
        return error.upstream_body
    kind, _ = anthropic_error(error)
    return json_encoder.encode({"type": "error", "error": {"type": kind, "message": error.message}})


def anthropic_status(error: GatewayError) -> int:
    return error.status if error.upstream_body is not None else anthropic_error(error)[1]


async def send_anthropic_error(send: Send, error: GatewayError) -> None:
    headers = [(b"request-id", b"req_gw_" + secrets.token_hex(12).encode()), *error_headers(error)]
    await send_json(send, anthropic_status(error), error_body(error), headers)


def error_event(error: GatewayError) -> bytes:
    return b"event: error\ndata: %b\n\n" % error_body(error)


# --- the request -----------------------------------------------------------------------------


class Head(msgspec.Struct):
    """What every request needs read before its targets are known."""

    model: str
    stream: bool | None = None
    resumable: bool = False


class TextBlock(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class Base64Source(msgspec.Struct, tag="base64", tag_field="type"):
    media_type: str
    data: str


class URLSource(msgspec.Struct, tag="url", tag_field="type"):
    url: str


class FileSource(msgspec.Struct, tag="file", tag_field="type"):
    file_id: str


class ImageBlock(msgspec.Struct, tag="image", tag_field="type"):
    source: Base64Source | URLSource | FileSource


class DocumentBlock(msgspec.Struct, tag="document", tag_field="type"):
    """Decoded only to be refused by name: no provider we translate to reads documents."""


class ToolReferenceBlock(msgspec.Struct, tag="tool_reference", tag_field="type"):
    """A tool a tool search loaded (Claude Code's `ToolSearch` results): the tools were all
    offered to the target already, so it is its name as text."""

    tool_name: str


class ToolUseBlock(msgspec.Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: msgspec.Raw = msgspec.Raw(b"{}")


class ToolResultBlock(msgspec.Struct, tag="tool_result", tag_field="type"):
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock | DocumentBlock | ToolReferenceBlock] | None = None
    is_error: bool = False


class ThinkingBlock(msgspec.Struct, tag="thinking", tag_field="type"):
    thinking: str = ""
    signature: str = ""


class RedactedThinkingBlock(msgspec.Struct, tag="redacted_thinking", tag_field="type"):
    data: str = ""


Block = TextBlock | ImageBlock | DocumentBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock


class Message(msgspec.Struct):
    role: Literal["user", "assistant", "system"]
    content: str | list[Block]


class ToolDefinition(msgspec.Struct):
    """A client tool (`input_schema`); a server tool has a `type` of its own and none.
    `defer_loading`, `cache_control` and the like change nothing for the target: ignored."""

    name: str
    input_schema: dict[str, Any] | None = None
    description: str | None = None
    type: str | None = None
    strict: bool | None = None


class ToolChoiceIn(msgspec.Struct):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None


class ThinkingIn(msgspec.Struct):
    type: str
    budget_tokens: int | None = None
    display: str | None = None


class OutputFormat(msgspec.Struct):
    type: Literal["json_schema"]
    schema: dict[str, Any]


class OutputConfig(msgspec.Struct):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: OutputFormat | None = None


class MessagesRequest(msgspec.Struct):
    """The fields of Anthropic's request a translation reads; the ones that only change
    cost or bookkeeping (`metadata`, `cache_control`, `context_management`,
    `service_tier`, …) and unknown ones are not read."""

    model: str
    messages: list[Message]
    max_tokens: int | None = None
    system: str | list[TextBlock] | None = None
    stream: bool | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoiceIn | None = None
    thinking: ThinkingIn | None = None
    output_config: OutputConfig | None = None
    mcp_servers: Any = None
    container: Any = None
    resumable: bool = False


head_decoder = msgspec.json.Decoder(Head)
request_decoder = msgspec.json.Decoder(MessagesRequest)
_any_decoder = msgspec.json.Decoder()

#: `output_config.effort` → `reasoning_effort` (our scale tops at `high`).
EFFORTS: dict[str, ReasoningEffort] = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
#: Fields that would change the answer and that no provider we translate to can honour.
UNTRANSLATABLE = ("top_k", "mcp_servers", "container")


def refuse(path: str, problem: str, provider: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"{path}: {problem}; {provider} cannot honour it through /v1/messages", provider=provider
    )


def to_chat_request(request: MessagesRequest, provider: str, model: str) -> ChatRequest:
    """Anthropic's request as ours, for `provider` (which takes reasoning signatures back
    only when it is `gemini`); a field the target cannot honour is a 400 naming it."""
    for name in UNTRANSLATABLE:
        if getattr(request, name) is not None:
            raise refuse(f"$.{name}", f"{name} is Anthropic's own", provider)
    messages: list[ChatMessage] = []
    if request.system:
        messages.append(ChatMessage("system", system_text(request.system)))
    keep_thinking = provider == "gemini"
    for index, message in enumerate(request.messages):
        if message.role == "assistant":
            messages.append(assistant_message(message, index, keep_thinking, provider))
        elif message.role == "system":
            messages.append(ChatMessage("system", system_text(message.content, index)))
        else:
            messages.extend(user_messages(message, index, provider))
    thinking_enabled, effort, include_reasoning = reasoning_of(request)
    tools, tool_choice = tools_of(request, provider)
    response_format = None
    if request.output_config is not None and request.output_config.format is not None:
        response_format = ResponseFormat(
            "json_schema", JSONSchemaFormat("output", request.output_config.format.schema, strict=True)
        )
    chat = ChatRequest(
        messages=messages,
        provider=provider,
        model=model,
        temperature=request.temperature,
        max_tokens=request.max_tokens,
        thinking_enabled=thinking_enabled,
        reasoning_effort=effort,
        include_reasoning=include_reasoning,
        stop=request.stop_sequences or None,
        response_format=response_format,
        tools=tools,
        tool_choice=tool_choice,
        top_p=request.top_p,
    )
    check_request(chat)
    return chat


def system_text(system: str | list[TextBlock] | list[Block], index: int | None = None) -> str:
    """A system prompt (a string or text blocks) as one text."""
    if type(system) is str:
        return system
    where = "$.system" if index is None else f"$.messages[{index}].content"
    texts = []
    for number, block in enumerate(system):
        if type(block) is not TextBlock:
            raise InvalidRequestError(f"{where}[{number}]: a system prompt holds text blocks only")
        texts.append(block.text)
    return "\n\n".join(texts)


def user_messages(message: Message, index: int, provider: str) -> list[ChatMessage]:
    """A user turn: its tool results as `tool` messages first, then its text and images
    as one user message (images a tool returned join it too)."""
    content = message.content
    if type(content) is str:
        return [ChatMessage("user", content)]
    results: list[ChatMessage] = []
    parts: list[ContentPart] = []
    for number, block in enumerate(content):
        where = f"$.messages[{index}].content[{number}]"
        kind = type(block)
        if kind is TextBlock:
            if block.text:  # type: ignore[union-attr]
                parts.append(TextPart(block.text))  # type: ignore[union-attr]
        elif kind is ImageBlock:
            parts.append(image_part(block, where, provider))  # type: ignore[arg-type]
        elif kind is ToolResultBlock:
            results.append(tool_message(block, where, parts, provider))  # type: ignore[arg-type]
        elif kind is DocumentBlock:
            raise refuse(f"{where}.type", "document blocks are not translated", provider)
        else:
            raise InvalidRequestError(f"{where}.type: a user message cannot hold {tag(block)!r} blocks")
    if parts:
        if all(type(part) is TextPart for part in parts):
            text = "\n".join(part.text for part in parts)  # type: ignore[union-attr]
            results.append(ChatMessage("user", text))
        else:
            results.append(ChatMessage("user", parts))
    return results


def tag(block: object) -> str:
    """A block's `type`, as the client wrote it."""
    return str(block.__struct_config__.tag)  # type: ignore[attr-defined]


def tool_message(block: ToolResultBlock, where: str, images: list[ContentPart], provider: str) -> ChatMessage:
    """A `tool_result` as a `tool` message of its text; its images go to `images`."""
    content = block.content
    if content is None or type(content) is str:
        text = content or ""
    else:
        texts = []
        for number, part in enumerate(content):
            if type(part) is TextBlock:
                texts.append(part.text)
            elif type(part) is ToolReferenceBlock:
                texts.append(f"Tool loaded: {part.tool_name}")
            elif type(part) is ImageBlock:
                images.append(image_part(part, f"{where}.content[{number}]", provider))
            else:
                raise refuse(f"{where}.content[{number}].type", "document blocks are not translated", provider)
        text = "\n".join(texts)
    return ChatMessage("tool", text, tool_call_id=block.tool_use_id)


def image_part(block: ImageBlock, where: str, provider: str) -> ImagePart:
    source = block.source
    if type(source) is Base64Source:
        return ImagePart(ImageURL(f"data:{source.media_type};base64,{source.data}"))
    if type(source) is URLSource:
        return ImagePart(ImageURL(source.url))
    raise refuse(f"{where}.source.type", "images from the Files API are not translated", provider)


def assistant_message(message: Message, index: int, keep_thinking: bool, provider: str) -> ChatMessage:
    """An assistant turn: its text, its `tool_use` blocks as calls, and (for a provider
    that takes them back) its signed thinking."""
    content = message.content
    if type(content) is str:
        return ChatMessage("assistant", content)
    texts: list[str] = []
    calls: list[ToolCall] = []
    thinking: list[ThinkingPart] = []
    for number, block in enumerate(content):
        kind = type(block)
        if kind is TextBlock:
            texts.append(block.text)  # type: ignore[union-attr]
        elif kind is ToolUseBlock:
            calls.append(ToolCall(block.id, FunctionCall(block.name, bytes(block.input).decode())))  # type: ignore[union-attr]
        elif kind is ThinkingBlock:
            if keep_thinking and block.signature:  # type: ignore[union-attr]
                thinking.append(ThinkingPart(block.thinking, block.signature))  # type: ignore[union-attr]
        elif kind is not RedactedThinkingBlock:
            raise InvalidRequestError(
                f"$.messages[{index}].content[{number}].type: an assistant message cannot hold {tag(block)!r} blocks"
            )
    text = "".join(texts)
    return ChatMessage(
        "assistant", text if text or not calls else None, tool_calls=calls or None, thinking=thinking or None
    )


def reasoning_of(request: MessagesRequest) -> tuple[bool, ReasoningEffort | None, bool]:
    """`thinking` and `output_config.effort` as (thinking_enabled, reasoning_effort,
    include_reasoning): `enabled` with a budget → the effort that budget buys, `adaptive`
    → the effort asked (else the provider's default), `disabled` → `none`; the reasoning
    text streams unless `display` is `omitted` (its signature still does)."""
    config = request.output_config
    effort = EFFORTS[config.effort] if config is not None and config.effort is not None else None
    thinking = request.thinking
    if thinking is None:
        return False, effort, False
    kind = thinking.type
    if kind == "disabled":
        return False, "none", False
    include = thinking.display != "omitted"
    if kind == "enabled":
        budget = thinking.budget_tokens or 0
        return True, effort or ("low" if budget <= 4096 else "medium" if budget <= 16384 else "high"), include
    if kind == "adaptive":
        return True, effort, include
    if kind == "between_tools":
        return True, effort or "low", include
    raise InvalidRequestError(f"$.thinking.type: {kind!r} is not a thinking type (enabled, adaptive, disabled)")


def tools_of(request: MessagesRequest, provider: str) -> tuple[list[Tool] | None, ToolChoice | None]:
    """Client tools as functions (`defer_loading` ones too); a server tool is Anthropic's
    own: refused by name."""
    if not request.tools:
        return None, None
    tools = []
    for index, tool in enumerate(request.tools):
        if tool.type not in (None, "custom") or tool.input_schema is None:
            raise refuse(f"$.tools[{index}]", f"{tool.name!r} is an Anthropic server tool ({tool.type})", provider)
        tools.append(Tool(FunctionDefinition(tool.name, tool.description, tool.input_schema, tool.strict)))
    choice = request.tool_choice
    tool_choice: ToolChoice | None = None
    if choice is not None:
        if choice.type == "tool":
            if not choice.name:
                raise InvalidRequestError("$.tool_choice.name: required for type 'tool'")
            tool_choice = NamedToolChoice(NamedFunction(choice.name))
        else:
            tool_choice = {"auto": "auto", "any": "required", "none": "none"}[choice.type]  # type: ignore[assignment]
    return tools, tool_choice


def estimate_tokens(request: ChatRequest) -> int:
    """The `count_tokens` estimate for providers without a counting API: a token per 4
    characters of text (messages, tool calls and results, tool definitions as JSON), 1,600
    per image (Anthropic's figure for a ~1.15 megapixel image), 4 per message."""
    chars = 0
    images = 0
    for message in request.messages:
        content = message.content
        if type(content) is str:
            chars += len(content)
        elif content is not None:
            for part in content:
                if type(part) is TextPart:
                    chars += len(part.text)
                else:
                    images += 1
        for call in message.tool_calls or ():
            chars += len(call.function.name) + len(call.function.arguments)
    if request.tools:
        chars += len(json_encoder.encode(request.tools))
    return math.ceil(chars / 4) + 1600 * images + 4 * len(request.messages)


# --- the answer ------------------------------------------------------------------------------

STOP_REASONS = {
    FinishReason.STOP: "end_turn",
    FinishReason.LENGTH: "max_tokens",
    FinishReason.TOOL_CALLS: "tool_use",
    FinishReason.CONTENT_FILTER: "refusal",
}

_TEXT, _THINKING, _TOOL = 1, 2, 3
_BLOCK_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n'
_BLOCK_START = b'event: content_block_start\ndata: {"type":"content_block_start","index":%d,"content_block":%b}\n\n'
_DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,"delta":{"type":"%b","%b":%b}}\n\n'
)
_TEXT_START = b'{"type":"text","text":""}'
_THINKING_START = b'{"type":"thinking","thinking":"","signature":""}'
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def anthropic_usage(usage: Usage | None, input_estimate: int) -> dict[str, Any]:
    """Our usage as Anthropic's: `input_tokens` without the cache reads and writes."""
    if usage is None:
        return {"input_tokens": input_estimate, "output_tokens": 0}
    cached = usage.cached_tokens or 0
    created = usage.cache_creation_tokens or 0
    body: dict[str, Any] = {
        "input_tokens": usage.prompt_tokens - cached - created,
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": created,
    }
    if usage.reasoning_tokens is not None:
        body["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return body


class MessagesFrames:
    """One answer as Anthropic's stream (the `pipeline.Frames` protocol). `message_start`
    goes out with the first frame; every block is opened and closed around its deltas. A
    passthrough's events (`raw`) go as they came, and then the final chunk writes nothing."""

    __slots__ = (
        "message_id",
        "model",
        "input_estimate",
        "started",
        "block",
        "index",
        "calls",
        "passthrough",
        "final_sent",
    )

    def __init__(self, message_id: str, model: str, input_estimate: int = 0) -> None:
        self.message_id = message_id
        self.model = model
        self.input_estimate = input_estimate
        self.started = False
        self.block = 0  # the kind of the open block, 0: none
        self.index = -1  # the index of the last block opened
        self.calls: dict[int, int] = {}  # a call's index → its block's index
        self.passthrough = False
        self.final_sent = False

    def _start(self) -> bytes:
        self.started = True
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_estimate, "output_tokens": 0},
        }
        return b"event: message_start\ndata: %b\n\n" % json_encoder.encode(
            {"type": "message_start", "message": message}
        )

    def _close(self) -> bytes:
        """`message_start` if not yet sent, and the stop of the open block, if any."""
        head = b"" if self.started else self._start()
        if self.block:
            self.block = 0
            return head + _BLOCK_STOP % self.index
        return head

    def _open(self, kind: int, block: bytes) -> bytes:
        head = self._close()
        self.block = kind
        self.index += 1
        return head + _BLOCK_START % (self.index, block)

    def content(self, chunk: StreamChunk) -> bytes:
        text = json_encoder.encode(chunk.content)
        if self.block == _TEXT:
            return _DELTA % (self.index, b"text_delta", b"text", text)
        return self._open(_TEXT, _TEXT_START) + _DELTA % (self.index, b"text_delta", b"text", text)

    def reasoning(self, chunk: ReasoningChunk) -> bytes:
        head = b"" if self.block == _THINKING else self._open(_THINKING, _THINKING_START)
        return head + _DELTA % (self.index, b"thinking_delta", b"thinking", json_encoder.encode(chunk.reasoning))

    def signature(self, chunk: SignatureChunk) -> bytes:
        """The signature ends the thinking block streaming; else it is a block of its own."""
        head = b"" if self.block == _THINKING else self._open(_THINKING, _THINKING_START)
        delta = _DELTA % (self.index, b"signature_delta", b"signature", json_encoder.encode(chunk.signature))
        return head + delta + self._close()

    def tool_call(self, chunk: ToolCallChunk) -> bytes:
        head = b""
        if chunk.id is not None:
            block = json_encoder.encode({"type": "tool_use", "id": chunk.id, "name": chunk.name or "", "input": {}})
            head = self._open(_TOOL, block)
            self.calls[chunk.index] = self.index
        if not chunk.arguments:
            return head
        index = self.calls.get(chunk.index, self.index)
        return head + _DELTA % (index, b"input_json_delta", b"partial_json", json_encoder.encode(chunk.arguments))

    def raw(self, chunk: RawEvent) -> bytes:
        self.passthrough = True
        return chunk.data

    def final(self, chunk: StreamChunk) -> bytes:
        self.final_sent = True
        if self.passthrough:
            return b""
        head = self._close()
        if chunk.finish_reason is FinishReason.ERROR:  # the failure that follows ends the stream in words
            self.final_sent = False
            return head
        delta = {
            "type": "message_delta",
            "delta": {
                "stop_reason": STOP_REASONS.get(chunk.finish_reason, "end_turn"),  # type: ignore[arg-type]
                "stop_sequence": None,
            },
            "usage": anthropic_usage(chunk.usage, self.input_estimate),
        }
        return head + b"event: message_delta\ndata: %b\n\n" % json_encoder.encode(delta) + _MESSAGE_STOP

    def failure(self, error: GatewayError, final_sent: bool, usage: Usage | None) -> bytes:
        """One `event: error` (Anthropic's own, from a passthrough), unless the message ended."""
        if self.final_sent:
            return b""
        return error_event(error)

    def done(self) -> bytes:
        return b""

    async def send_answer(self, send: Send, answer: CollectedAnswer) -> None:
        """The whole answer as one `message` (a passthrough's as Anthropic sent it)."""
        if answer.raw:
            await send_json(send, 200, answer.raw)
            return
        content: list[dict[str, Any]] = []
        if answer.reasoning or answer.signature:
            content.append(
                {"type": "thinking", "thinking": answer.reasoning or "", "signature": answer.signature or ""}
            )
        if answer.content:
            content.append({"type": "text", "text": answer.content})
        for call in answer.tool_calls or ():
            content.append(
                {
                    "type": "tool_use",
                    "id": call.id,
                    "name": call.function.name,
                    "input": tool_input(call.function.arguments),
                }
            )
        final = answer.final
        message = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "content": content,
            "model": self.model,
            "stop_reason": STOP_REASONS.get(final.finish_reason, "end_turn"),  # type: ignore[arg-type]
            "stop_sequence": None,
            "usage": anthropic_usage(final.usage, self.input_estimate),
        }
        await send_json(send, 200, json_encoder.encode(message))


def tool_input(arguments: str) -> msgspec.Raw:
    """A call's arguments as its `input` object (`{}` when they are not one)."""
    try:
        if type(_any_decoder.decode(arguments)) is dict:
            return msgspec.Raw(arguments.encode())
    except msgspec.DecodeError:
        pass
    return msgspec.Raw(b"{}")


class NumberedMessagesFrames(NumberedFrames[MessagesFrames]):
    """The events of a resumable message, numbered (`NumberedFrames`)."""

    __slots__ = ()

    def meta(self) -> dict[str, Any]:
        return {"dialect": "anthropic", "message_id": self.frames.message_id, "model": self.frames.model}

    @classmethod
    def restore(cls, meta: dict[str, Any]) -> NumberedMessagesFrames:
        return cls(MessagesFrames(meta["message_id"], meta["model"]))


# --- the endpoints ---------------------------------------------------------------------------

#: A session id as the request log shows it (Claude Code's are UUIDs).
_SESSION = re.compile(rb"[A-Za-z0-9._:-]{1,100}")


def request_headers(scope: Scope) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
    """The client's `anthropic-*` headers (forwarded to Anthropic) and its Claude Code session id."""
    forwarded = []
    session = None
    for name, value in scope["headers"]:
        if name.startswith(b"anthropic-"):
            forwarded.append((name, value))
        elif name == b"x-claude-code-session-id":
            session = value
    return forwarded, session


def upstream_path(scope: Scope, path: str) -> str:
    """`path`, with `?beta=true` when the client's request had it."""
    return path + "?beta=true" if b"beta=true" in scope.get("query_string", b"") else path


class MessagesDialect:
    """`POST /v1/messages`: passed through to `anthropic`, translated to the others."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.passthroughs: dict[int, AnthropicPassthrough] = {}

    def passthrough(self, target: Target) -> AnthropicPassthrough:
        passthrough = self.passthroughs.get(id(target.adapter))
        if passthrough is None:
            from ..providers.anthropic_passthrough import AnthropicPassthrough

            passthrough = self.passthroughs[id(target.adapter)] = AnthropicPassthrough(target.adapter)  # type: ignore[arg-type]
        return passthrough

    def prepare(self, body: bytes, scope: Scope) -> Call:
        headers, session = request_headers(scope)
        if session is not None and _SESSION.fullmatch(session):
            scope[LOG_FIELDS] = "session=" + session.decode()
        head: Head = decode_json(body, head_decoder)
        targets = self.gateway.targets(head.model, PROVIDER)
        translated: dict[str, ChatRequest] = {}
        decoded: list[MessagesRequest] = []

        def chat_request(target: Target) -> ChatRequest:
            request = translated.get(target.adapter.name + "/" + target.model)
            if request is None:
                if not decoded:
                    decoded.append(decode_json(body, request_decoder))
                request = to_chat_request(decoded[0], target.adapter.name, target.model)
                translated[target.adapter.name + "/" + target.model] = request
            return request

        first = targets[0]
        estimate = 0
        if first.adapter.name != PROVIDER:
            estimate = estimate_tokens(chat_request(first))
        streaming = bool(head.stream)
        resumable = head.resumable and streaming
        plain = MessagesFrames("msg_" + secrets.token_hex(12), head.model, estimate)
        frames = NumberedMessagesFrames(plain) if resumable else plain
        path = upstream_path(scope, "/v1/messages")

        def open_target(target: Target) -> Awaitable[ChunkStream]:
            if target.adapter.name == PROVIDER:
                upstream_body = body
                if target.model != head.model or b'"resumable"' in body:  # ours: never sent upstream
                    upstream_body = renamed(body, target.model)
                return self.passthrough(target).open(
                    path, upstream_body, headers, streaming=streaming, model=target.model
                )
            return target.adapter.stream_chat(chat_request(target))

        return Call(
            provider=first.adapter.name,
            model=first.model,
            open=self.gateway.opener(targets, open_target),
            frames=frames,
            streaming=streaming,
            resumable=resumable,
            send_answer=plain.send_answer,
            requested_model=head.model,
        )

    send_error = staticmethod(send_anthropic_error)
    error_status = staticmethod(anthropic_status)


def renamed(body: bytes, model: str) -> bytes:
    """The body with `model` set to `model` and our own `resumable` left out; every other
    field as sent (the same JSON content, in the same order)."""
    fields = _any_decoder.decode(body)
    fields["model"] = model
    fields.pop("resumable", None)
    return json_encoder.encode(fields)


class CountTokensEndpoint:
    """`POST /v1/messages/count_tokens` → `{"input_tokens": N}`: Anthropic's own count for
    `anthropic` (passed through), Gemini's `countTokens` for `gemini`, else
    `estimate_tokens`."""

    def __init__(self, dialect: MessagesDialect) -> None:
        self.dialect = dialect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await read_body(scope, receive, self.dialect.gateway.settings.max_body_bytes)
            answer = await self.count(body, scope)
        except ClientGone:
            return
        except GatewayError as error:
            await send_anthropic_error(send, error)
            return
        await send_json(send, 200, answer)

    async def count(self, body: bytes, scope: Scope) -> bytes:
        head: Head = decode_json(body, head_decoder)
        target = self.dialect.gateway.targets(head.model, PROVIDER)[0]
        if target.adapter.name == PROVIDER:
            headers, _ = request_headers(scope)
            upstream_body = body if target.model == head.model else renamed(body, target.model)
            path = upstream_path(scope, "/v1/messages/count_tokens")
            return await self.dialect.passthrough(target).count_tokens(path, upstream_body, headers)
        request = to_chat_request(decode_json(body, request_decoder), target.adapter.name, target.model)
        count_tokens = getattr(target.adapter, "count_tokens", None)
        tokens = await count_tokens(request) if count_tokens is not None else estimate_tokens(request)
        return json_encoder.encode({"input_tokens": tokens})


# --- the model list in Anthropic's shape -----------------------------------------------------


def wants_anthropic_shape(scope: Scope) -> bool:
    """An Anthropic client (it sends `anthropic-version`) asks for `/v1/models`."""
    return any(name == b"anthropic-version" for name, _ in scope["headers"])


def model_cards(catalog: Catalog) -> list[dict[str, Any]]:
    """Every model of each configured provider in Anthropic's shape: `anthropic`'s by their
    bare names (so Claude Code's discovery, which keeps `claude*` ids, lists them), the
    others as `<provider>/<model>`."""
    created = datetime.fromtimestamp(catalog.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    providers = sorted(catalog.adapters, key=lambda name: name != PROVIDER)
    return [
        {
            "type": "model",
            "id": model if name == PROVIDER else f"{name}/{model}",
            "display_name": model,
            "created_at": created,
        }
        for name in providers
        if catalog.adapters[name].configured
        for model in catalog.models[name]
    ]


def model_list(catalog: Catalog, scope: Scope) -> bytes:
    """`GET /v1/models` in Anthropic's list shape, one page: `?limit=` (1–1000, default
    20), `?after_id=` / `?before_id=` from an earlier page."""
    cards = model_cards(catalog)
    query = dict(pair.partition("=")[::2] for pair in scope.get("query_string", b"").decode("latin-1").split("&"))
    ids = [card["id"] for card in cards]
    start, end = 0, len(cards)
    if query.get("after_id") in ids:
        start = ids.index(query["after_id"]) + 1
    if query.get("before_id") in ids:
        end = ids.index(query["before_id"])
    limit = int(query["limit"]) if query.get("limit", "").isdigit() else 20
    limit = min(max(limit, 1), 1000)
    page = cards[start:end][:limit] if "before_id" not in query else cards[start:end][-limit:]
    return json_encoder.encode(
        {
            "data": page,
            "has_more": start + len(page) < end if "before_id" not in query else end - len(page) > start,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
        }
    )


def model_card(catalog: Catalog, model: str) -> bytes | None:
    for card in model_cards(catalog):
        if card["id"] == model:
            return json_encoder.encode(card)
    return None


def routes(gateway: Gateway) -> list[BaseRoute]:
    streams = gateway.streams
    dialect = MessagesDialect(gateway)
    return [
        Route("/v1/messages", ChatEndpoint(dialect, gateway.settings, streams), methods=["POST"]),
        Route("/v1/messages/count_tokens", CountTokensEndpoint(dialect), methods=["POST"]),
        Route("/v1/messages/{stream_id}/stream", ResumeEndpoint(streams, send_anthropic_error), methods=["GET"]),
        Route("/v1/messages/{stream_id}/stream", CancelEndpoint(streams, send_anthropic_error), methods=["DELETE"]),
    ]


RESTORERS = {"anthropic": NumberedMessagesFrames.restore}
ERROR_SENDERS = {"/v1/messages": send_anthropic_error}
