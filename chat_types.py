"""The request and stream types every adapter speaks, with one reused codec per type.

Request shapes follow OpenAI's (the lingua franca the contract adopts): content parts,
`tools`, `tool_choice`, assistant `tool_calls`, `tool` messages, `response_format`.
Field order in the chunk Structs is the order of keys on the wire, so do not reorder
fields.

An adapter's stream yields three kinds of chunk, each its own frame type:
`StreamChunk` (`event: message`: text, and the one final chunk with `finish_reason`),
`ReasoningChunk` (`event: reasoning`, only when the request has `include_reasoning`)
and `ToolCallChunk` (`event: tool_call`).
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

import msgspec

Role = Literal["system", "user", "assistant", "tool"]
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high"]
ToolName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class FinishReason(str, enum.Enum):
    """The unified reasons a stream ends with (see the contract's mapping table)."""

    STOP = "stop"
    LENGTH = "length"
    CONTENT_FILTER = "content_filter"
    TOOL_CALLS = "tool_calls"
    ERROR = "error"


# --- the request ------------------------------------------------------------------------


class ImageURL(msgspec.Struct, frozen=True, omit_defaults=True):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class TextPart(msgspec.Struct, frozen=True, tag="text", tag_field="type"):
    text: str


class ImagePart(msgspec.Struct, frozen=True, tag="image_url", tag_field="type"):
    image_url: ImageURL


ContentPart = TextPart | ImagePart


class FunctionCall(msgspec.Struct, frozen=True):
    name: str
    arguments: str  # the JSON text of the arguments, as the model produced it


class ToolCall(msgspec.Struct, frozen=True):
    """One call in an assistant message (and in a non-streaming answer)."""

    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class ThinkingPart(msgspec.Struct, frozen=True, omit_defaults=True):
    """Reasoning of an earlier assistant turn, sent back (the Messages and Responses
    dialects): its text and the provider's `signature` for it; `redacted`: `text` is the
    provider's encrypted form (Anthropic `redacted_thinking`)."""

    text: str = ""
    signature: str | None = None
    redacted: bool = False


class ChatMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    """One message. Unset fields are omitted on the wire, so a plain text message
    encodes as `{"role", "content"}`, as OpenAI takes it. `thinking` (assistant messages,
    from the dialects that carry reasoning back) is not part of the native request."""

    role: Role
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    thinking: list[ThinkingPart] | None = None

    @property
    def text(self) -> str:
        """The message's text: the string, or its text parts joined by newlines."""
        content = self.content
        if content is None:
            return ""
        if type(content) is str:
            return content
        return "\n".join(part.text for part in content if type(part) is TextPart)


class FunctionDefinition(msgspec.Struct, frozen=True, omit_defaults=True):
    name: ToolName
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema object
    strict: bool | None = None


class Tool(msgspec.Struct, frozen=True):
    function: FunctionDefinition
    type: Literal["function"] = "function"


class NamedFunction(msgspec.Struct, frozen=True):
    name: str


class NamedToolChoice(msgspec.Struct, frozen=True):
    function: NamedFunction
    type: Literal["function"] = "function"


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


class JSONSchemaFormat(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class ResponseFormat(msgspec.Struct, frozen=True, omit_defaults=True):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


StopSequence = Annotated[str, msgspec.Meta(min_length=1)]


class ChatRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The body of `POST /api/v1/chat/stream` and `POST /api/v1/chat` (and what
    `/v1/chat/completions` is translated to). `None` means "not asked for": nothing is
    sent upstream for it."""

    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1)]
    provider: str = ""  # "": left out, allowed only when `model` names a route
    model: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    thinking_enabled: bool = False
    reasoning_effort: ReasoningEffort | None = None
    include_reasoning: bool = False
    stop: StopSequence | Annotated[list[StopSequence], msgspec.Meta(min_length=1, max_length=4)] | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    resumable: bool = False
    top_p: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None

    @property
    def stop_sequences(self) -> list[str] | None:
        """`stop` as a list (a single string is one sequence)."""
        stop = self.stop
        return [stop] if isinstance(stop, str) else stop


# --- the stream -------------------------------------------------------------------------


class Usage(msgspec.Struct, omit_defaults=True):
    """Token counts; `reasoning_tokens` (included in `completion_tokens`) only when the
    upstream reports it."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None  # read from the provider's prompt cache (in `prompt_tokens`)
    cache_creation_tokens: int | None = None  # written to it (in `prompt_tokens`)

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int, reasoning_tokens: int | None = None) -> Usage:
        return cls(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens, reasoning_tokens)


class StreamChunk(msgspec.Struct):
    """One `message` frame: a piece of content, or the final frame with finish_reason."""

    content: str
    finish_reason: FinishReason | None
    model: str
    provider: str
    usage: Usage | None = None


class ReasoningChunk(msgspec.Struct):
    """One `reasoning` frame: a non-empty piece of the model's reasoning text."""

    reasoning: str
    model: str
    provider: str


class ToolCallChunk(msgspec.Struct, omit_defaults=True):
    """One `tool_call` frame. A call's first chunk carries `index` (0, 1, … in the order
    the calls began), `id` and `name`; later chunks `index` and the next `arguments`
    fragment."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str | None = None


class SignatureChunk(msgspec.Struct):
    """The provider's signature of the reasoning just streamed (Anthropic's thinking
    `signature`, Gemini's `thoughtSignature`): opaque, sent back with the next turn so the
    provider accepts its own reasoning again. Dialects that cannot carry it write nothing."""

    signature: str


class RawEvent:
    """A passthrough's event, already in the client's dialect (`data`: one whole SSE event,
    blank line included), sent as it came. `token`: it carries model output (for
    time-to-first-token)."""

    __slots__ = ("data", "token")

    def __init__(self, data: bytes, token: bool = False) -> None:
        self.data = data
        self.token = token


Chunk = StreamChunk | ReasoningChunk | ToolCallChunk | SignatureChunk | RawEvent


class ChatResponse(msgspec.Struct):
    """The body of `POST /api/v1/chat`: the whole answer at once."""

    content: str
    finish_reason: FinishReason
    model: str
    provider: str
    usage: Usage | None
    tool_calls: list[ToolCall] | None = None


class ChatResponseWithReasoning(ChatResponse):
    """`ChatResponse` for a request with `include_reasoning`: `reasoning` too."""

    reasoning: str | None = None


chat_request_decoder = msgspec.json.Decoder(ChatRequest)
json_encoder = msgspec.json.Encoder()
