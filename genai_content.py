"""The prompt and the answer of a chat request as the GenAI semantic conventions record them
when `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true` (`tracing.py`; imported only
with OpenTelemetry on): `gen_ai.system_instructions`, `gen_ai.input.messages` and
`gen_ai.output.messages` in the conventions' message schema (role, `parts` of type `text`,
`reasoning`, `tool_call`, `tool_call_response`, `uri`, `blob`, or a part naming only its
`type`), as structured attribute values (the SDK carries them since attributes may be maps
and lists; the conventions ask for the structured form where it is supported).
https://github.com/open-telemetry/semantic-conventions-genai/blob/main/docs/gen-ai/gen-ai-spans.md

The prompt is read from the body as the client sent it, whatever the dialect: OpenAI-shaped
`messages` (native, `/v1/chat/completions`), Anthropic's `system` and content blocks
(`/v1/messages`), the Responses API's `instructions` and `input` items. The answer is
gathered from the chunks as they pass (`Content.reading`: only for a request whose content
is captured; nothing is done per frame otherwise), and a passthrough's events are read for
their text at the end. Sans-I/O apart from that pass-through reader.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import msgspec

from .adapter import ChunkStream
from .chat_types import Chunk, FinishReason, RawEvent, ReasoningChunk, StreamChunk, ToolCallChunk

CAPTURE_VARIABLE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

Part = dict[str, Any]
Message = dict[str, Any]

#: Ours → the conventions' `finish_reason` values.
FINISH_REASONS = {FinishReason.TOOL_CALLS: "tool_call"}

_decode = msgspec.json.Decoder().decode


class Content:
    """One request's prompt (its body) and the answer read so far."""

    __slots__ = ("body", "calls", "raw", "reasoning", "text")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, tuple[str | None, str | None, list[str]]] = {}  # index → id, name, arguments
        self.raw: list[bytes] = []  # a passthrough's events

    def reading(self, stream: ChunkStream) -> ChunkStream:
        """`stream`, its chunks noted as they pass; closing it closes `stream`."""
        return ChunkStream(self._read(aiter(stream)), stream.aclose)

    async def _read(self, chunks: AsyncIterator[Chunk]) -> AsyncGenerator[Chunk, None]:
        async for chunk in chunks:
            kind = type(chunk)
            if kind is StreamChunk:
                if chunk.content:  # type: ignore[union-attr]
                    self.text.append(chunk.content)  # type: ignore[union-attr]
            elif kind is ReasoningChunk:
                self.reasoning.append(chunk.reasoning)  # type: ignore[union-attr]
            elif kind is ToolCallChunk:
                call: ToolCallChunk = chunk  # type: ignore[assignment]
                entry = self.calls.setdefault(call.index, (call.id, call.name, []))
                if call.arguments:
                    entry[2].append(call.arguments)
            elif kind is RawEvent:
                self.raw.append(chunk.data)  # type: ignore[union-attr]
            yield chunk

    def record(self, attributes: dict[str, Any], finish_reason: FinishReason | None) -> None:
        """Set the content attributes on a span's `attributes`."""
        system, messages = input_messages(self.body)
        if system:
            attributes["gen_ai.system_instructions"] = system
        if messages:
            attributes["gen_ai.input.messages"] = messages
        parts = self.parts()
        if parts or finish_reason is not None:
            output: Message = {"role": "assistant", "parts": parts}
            if finish_reason is not None:
                output["finish_reason"] = FINISH_REASONS.get(finish_reason, finish_reason.value)
            attributes["gen_ai.output.messages"] = [output]

    def parts(self) -> list[Part]:
        """The answer's parts: reasoning, text, tool calls (a passthrough's from its events)."""
        if self.raw:
            return raw_parts(self.raw)
        parts: list[Part] = []
        if self.reasoning:
            parts.append({"type": "reasoning", "content": "".join(self.reasoning)})
        if self.text:
            parts.append({"type": "text", "content": "".join(self.text)})
        for _, (call_id, name, arguments) in sorted(self.calls.items()):
            parts.append(tool_call(call_id, name, "".join(arguments)))
        return parts


# --- the prompt -------------------------------------------------------------------------


def input_messages(body: bytes) -> tuple[list[Part], list[Message]]:
    """The system instructions given apart from the messages (Anthropic `system`, Responses
    `instructions`), and the messages in order, from a request body of any dialect."""
    try:
        request = _decode(body)
    except msgspec.DecodeError:
        return [], []
    if not isinstance(request, dict):
        return [], []
    system = parts_of(request.get("system")) if "system" in request else parts_of(request.get("instructions"))
    messages = request.get("messages")
    if isinstance(messages, list):
        return system, [message(item) for item in messages if isinstance(item, dict)]
    return system, responses_input(request.get("input"))


def message(item: dict[str, Any]) -> Message:
    """One OpenAI-shaped or Anthropic message."""
    role = item.get("role") or "user"
    if role == "tool":  # OpenAI's tool result
        response = {"type": "tool_call_response", "response": text_of(item.get("content"))}
        if item.get("tool_call_id"):
            response["id"] = item["tool_call_id"]
        return {"role": role, "parts": [response]}
    parts = [{"type": "reasoning", "content": part["text"]} for part in _dicts(item.get("thinking")) if "text" in part]
    parts += parts_of(item.get("content"))
    for call in _dicts(item.get("tool_calls")):
        function = _dict(call.get("function"))
        parts.append(tool_call(call.get("id"), function.get("name"), function.get("arguments")))
    out: Message = {"role": role, "parts": parts}
    if isinstance(item.get("name"), str):
        out["name"] = item["name"]
    return out


def responses_input(items: Any) -> list[Message]:
    """The Responses API's `input`: a text, or items (messages, function calls and their
    outputs, reasoning); an item of another type is left out."""
    if isinstance(items, str):
        return [{"role": "user", "parts": [{"type": "text", "content": items}]}]
    messages: list[Message] = []
    for item in _dicts(items):
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": item.get("role") or "user", "parts": parts_of(item.get("content"))})
        elif kind == "function_call":
            messages.append(
                {
                    "role": "assistant",
                    "parts": [tool_call(item.get("call_id"), item.get("name"), item.get("arguments"))],
                }
            )
        elif kind == "function_call_output":
            response = {"type": "tool_call_response", "response": text_of(item.get("output"))}
            if item.get("call_id"):
                response["id"] = item["call_id"]
            messages.append({"role": "tool", "parts": [response]})
        elif kind == "reasoning":
            messages.append({"role": "assistant", "parts": [reasoning_of(item)]})
    return messages


def parts_of(content: Any) -> list[Part]:
    """A message's content (a text, or parts / blocks of any dialect) as parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    return [part_of(block) for block in _dicts(content)]


def part_of(block: dict[str, Any]) -> Part:
    kind = block.get("type")
    if kind in ("text", "input_text", "output_text") and isinstance(block.get("text"), str):
        return {"type": "text", "content": block["text"]}
    if kind == "image_url":  # OpenAI chat: {"image_url": {"url": ...}}
        image = block.get("image_url")
        return image_part(image.get("url") if isinstance(image, dict) else image)
    if kind == "input_image":  # Responses: {"image_url": "..."}
        return image_part(block.get("image_url"))
    if kind == "image":  # Anthropic: {"source": {"type": "base64" | "url", ...}}
        source = _dict(block.get("source"))
        if source.get("type") == "base64":
            return {
                "type": "blob",
                "modality": "image",
                "mime_type": source.get("media_type"),
                "content": source.get("data"),
            }
        return image_part(source.get("url"))
    if kind == "tool_use":
        return tool_call(block.get("id"), block.get("name"), block.get("input"))
    if kind == "tool_result":
        response = {"type": "tool_call_response", "response": text_of(block.get("content"))}
        if block.get("tool_use_id"):
            response["id"] = block["tool_use_id"]
        return response
    if kind == "thinking" and isinstance(block.get("thinking"), str):
        return {"type": "reasoning", "content": block["thinking"]}
    return {"type": kind if isinstance(kind, str) else "unknown"}  # its content is not ours to interpret


def image_part(url: Any) -> Part:
    """An image by URL: a `data:` URL's bytes as a `blob` part, any other as a `uri` part."""
    if not isinstance(url, str):
        return {"type": "uri", "modality": "image"}
    if url.startswith("data:") and ";base64," in url:
        mime_type, data = url[5:].split(";base64,", 1)
        return {"type": "blob", "modality": "image", "mime_type": mime_type, "content": data}
    return {"type": "uri", "modality": "image", "uri": url}


def tool_call(call_id: Any, name: Any, arguments: Any) -> Part:
    """A `tool_call` part; arguments given as JSON text are decoded (the conventions ask for
    the object), kept as text when they are not JSON."""
    if isinstance(arguments, str):
        try:
            arguments = _decode(arguments) if arguments else {}
        except msgspec.DecodeError:
            pass
    part: Part = {"type": "tool_call", "name": name if isinstance(name, str) else ""}
    if isinstance(call_id, str):
        part["id"] = call_id
    if arguments is not None:
        part["arguments"] = arguments
    return part


def text_of(content: Any) -> Any:
    """A tool result: its text (text blocks joined), else as given."""
    if isinstance(content, list) and all(isinstance(block, dict) and "text" in block for block in content):
        return "".join(str(block["text"]) for block in content)
    return content


def reasoning_of(item: dict[str, Any]) -> Part:
    """A Responses reasoning item's summary (its content when there is no summary)."""
    texts = [part["text"] for part in _dicts(item.get("summary")) if isinstance(part.get("text"), str)]
    if not texts:
        texts = [part["text"] for part in _dicts(item.get("content")) if isinstance(part.get("text"), str)]
    return {"type": "reasoning", "content": "\n\n".join(texts)}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(items: Any) -> list[dict[str, Any]]:
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


# --- a passthrough's answer -------------------------------------------------------------


def raw_parts(events: list[bytes]) -> list[Part]:
    """The answer's parts from a passthrough's events as the client got them: Anthropic's
    Messages events (or its whole `message`), the Responses API's `response.completed` (or
    its whole `response`)."""
    text: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, tuple[Any, Any, list[str]]] = {}
    for event in events:
        data = event_data(event)
        if not isinstance(data, dict):
            continue
        kind = data.get("type")
        if kind == "message" or data.get("object") == "response" or kind == "response.completed":
            whole = data.get("response") if kind == "response.completed" else data
            return whole_answer(whole if isinstance(whole, dict) else {})
        if kind == "content_block_start":
            block = _dict(data.get("content_block"))
            if block.get("type") == "tool_use":
                calls[data.get("index", 0)] = (block.get("id"), block.get("name"), [])
        elif kind == "content_block_delta":
            delta = _dict(data.get("delta"))
            if delta.get("type") == "text_delta":
                text.append(str(delta.get("text", "")))
            elif delta.get("type") == "thinking_delta":
                reasoning.append(str(delta.get("thinking", "")))
            elif delta.get("type") == "input_json_delta" and data.get("index", 0) in calls:
                calls[data.get("index", 0)][2].append(str(delta.get("partial_json", "")))
    parts: list[Part] = []
    if reasoning:
        parts.append({"type": "reasoning", "content": "".join(reasoning)})
    if text:
        parts.append({"type": "text", "content": "".join(text)})
    parts += [tool_call(call_id, name, "".join(arguments)) for _, (call_id, name, arguments) in sorted(calls.items())]
    return parts


def whole_answer(answer: dict[str, Any]) -> list[Part]:
    """The parts of a whole answer: an Anthropic `message` (`content` blocks) or a Responses
    `response` (`output` items)."""
    if "output" not in answer:
        return parts_of(answer.get("content"))
    parts: list[Part] = []
    for item in _dicts(answer.get("output")):
        kind = item.get("type")
        if kind == "message":
            parts += parts_of(item.get("content"))
        elif kind == "function_call":
            parts.append(tool_call(item.get("call_id"), item.get("name"), item.get("arguments")))
        elif kind == "reasoning":
            parts.append(reasoning_of(item))
    return parts


def event_data(event: bytes) -> Any:
    """The JSON of one SSE event (its `data:` lines), or of a whole JSON body."""
    if event.lstrip().startswith(b"{"):
        payload = event
    else:
        lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
        payload = b"\n".join(line.rstrip(b"\r") for line in lines)
    try:
        return _decode(payload)
    except msgspec.DecodeError:
        return None
