"""The request and stream types every adapter speaks, with one reused codec per type.

Field order in `StreamChunk` is the order of keys on the wire (the contract lists them
alphabetically), so do not reorder fields.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

import msgspec

Role = Literal["system", "user", "assistant"]


class FinishReason(str, enum.Enum):
    """The unified reasons a stream ends with (see the contract's mapping table)."""

    STOP = "stop"
    LENGTH = "length"
    CONTENT_FILTER = "content_filter"
    TOOL_CALLS = "tool_calls"
    ERROR = "error"


class ChatMessage(msgspec.Struct, frozen=True):
    role: Role
    content: str


class ChatRequest(msgspec.Struct, frozen=True):
    """The body of `POST /api/v1/chat/stream` and `POST /api/v1/chat`."""

    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1)]
    provider: str
    model: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] = 0.7
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 1024
    thinking_enabled: bool = False


class Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)


class StreamChunk(msgspec.Struct):
    """One `message` frame: a piece of content, or the final frame with finish_reason."""

    content: str
    finish_reason: FinishReason | None
    model: str
    provider: str
    usage: Usage | None = None


class ChatResponse(msgspec.Struct):
    """The body of `POST /api/v1/chat`: the whole answer at once."""

    content: str
    finish_reason: FinishReason
    model: str
    provider: str
    usage: Usage | None


chat_request_decoder = msgspec.json.Decoder(ChatRequest)
json_encoder = msgspec.json.Encoder()
