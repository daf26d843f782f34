"""OpenAI's Responses API: `POST /v1/responses`, `GET`/`DELETE /v1/responses/{id}`,
`POST /v1/responses/{id}/cancel` (Codex, the Agents SDK, the AI SDK, `client.responses`).

`model` picks the targets as on every `/v1` endpoint (a bare name is `openai`). To
`openai` the request is a passthrough to the upstream's own Responses API
(`providers.openai_responses.open_responses_passthrough`): the body as sent, the events
as they came (`RawEvent`). To every other provider it is translated: the input items
(with the conversation a `previous_response_id` names, and the items `item_reference`s
and reasoning items name by id, read from `responses_store`) become our `ChatRequest`, and
the chunks come back as Responses events (`ResponsesFrames`), each with its
`sequence_number`: `response.created`, `response.in_progress`, per output item
`response.output_item.added` … `.done` (messages, reasoning summaries, function calls),
then `response.completed` / `.incomplete` with the whole response. A translated response
is stored unless `store: false`, written before its last event goes out, so the client
can continue it at once on any replica.

`background: true` with `stream: true` is a resumable stream (`resume.Streams`) whose id is
the response's: each event also carries `id: <sequence_number + 1>`, so
`GET /v1/responses/{id}?stream=true&starting_after=N` replays from `Last-Event-ID: N + 1`.

A namespace tool's functions are offered as `<namespace>__<name>` functions and their
calls come back as `name` plus `namespace`. Built-in tools (`web_search`, …) and custom
tools are left out of a translated request, unless `tool_choice` requires one (a 400).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable
from typing import Annotated, Any

import msgspec
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

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
from ..errors import CancelledError, GatewayError, InvalidRequestError
from ..gateway import Gateway, Target
from ..pipeline import (
    SSE_HEADERS,
    Call,
    ChatEndpoint,
    ClientWatch,
    CollectedAnswer,
    StreamProgress,
    decode_json,
    error_headers,
    run_chat,
    send_json,
)
from ..request_checks import check_request
from ..responses_store import Item, ResponseStore, StoredResponse, store_for
from ..stream_store import StreamLost
from .openai_chat import openai_status, send_openai_error

# --- the request ----------------------------------------------------------------------


class ReasoningConfig(msgspec.Struct):
    effort: str | None = None
    summary: str | None = None


class TextConfig(msgspec.Struct):
    format: dict[str, Any] | None = None


class ResponsesRequest(msgspec.Struct):
    """The fields of a Responses request a translation reads; the rest are ignored here
    (and passed through as sent to `openai`)."""

    model: Annotated[str, msgspec.Meta(min_length=1)]
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    text: TextConfig | None = None
    max_output_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    reasoning: ReasoningConfig | None = None
    include: list[str] | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    background: bool | None = None
    stream: bool | None = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, Any] | None = None
    truncation: str | None = None
    user: str | None = None


responses_request_decoder = msgspec.json.Decoder(ResponsesRequest)

#: `reasoning.effort` → ours (`xhigh` is the most we can ask for: `high`).
EFFORTS: dict[str, ReasoningEffort] = {"none": "none", "minimal": "minimal", "low": "low", "medium": "medium",
                                       "high": "high", "xhigh": "high"}
#: `include` value that shows reasoning items' `encrypted_content` (the provider's signature).
ENCRYPTED_CONTENT = "reasoning.encrypted_content"
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NOT_NAME = re.compile(r"[^A-Za-z0-9_-]")
#: What an upstream response id may look like (it goes into the upstream's path).
UPSTREAM_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")


class ResponseNotFoundError(GatewayError):
    status, type = 404, "response_not_found"


def not_found(response_id: str) -> ResponseNotFoundError:
    shown = response_id[:100]
    return ResponseNotFoundError(f"No response found with id '{shown}': it does not exist, has expired "
                                 "(RESPONSES_TTL_S), was created with store: false, or was deleted.")


class UnsupportedError(GatewayError):
    """A Responses feature the target cannot honour (a 400 naming it)."""

    status, type = 400, "unsupported_parameter"


# --- tools ----------------------------------------------------------------------------


class ToolPlan:
    """A request's tools as the target takes them: functions (namespaces flattened), the
    tool choice, and each flattened name's `(namespace, name)`."""

    __slots__ = ("names", "tool_choice", "tools")

    def __init__(self, tools: list[Tool] | None, tool_choice: ToolChoice | None,
                 names: dict[str, tuple[str, str]]) -> None:
        self.tools = tools
        self.tool_choice = tool_choice
        self.names = names


def flat_name(namespace: str, name: str) -> str:
    """`<namespace>__<name>` as a name every provider takes (`^[A-Za-z0-9_-]{1,64}$`)."""
    flat = _NOT_NAME.sub("_", f"{namespace}__{name}")
    if len(flat) > 64:
        flat = flat[:55] + "_" + hashlib.sha256(flat.encode()).hexdigest()[:8]
    return flat


def function_tool(spec: dict[str, Any], name: str, where: str) -> Tool:
    if not _TOOL_NAME.fullmatch(name):
        raise InvalidRequestError(f"{where}.name: {name[:80]!r} must match ^[A-Za-z0-9_-]{{1,64}}$")
    parameters = spec.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidRequestError(f"{where}.parameters: must be a JSON Schema object")
    description = spec.get("description")
    strict = spec.get("strict")
    return Tool(FunctionDefinition(name, description if isinstance(description, str) else None, parameters,
                                   strict if isinstance(strict, bool) else None))


def plan_tools(tools: list[dict[str, Any]] | None, choice: str | dict[str, Any] | None, provider: str) -> ToolPlan:
    """Functions and namespaces offered as functions; built-in and custom tools left out,
    unless `tool_choice` requires one (then a 400 naming it)."""
    functions: list[Tool] = []
    names: dict[str, tuple[str, str]] = {}
    left_out: list[str] = []
    for index, spec in enumerate(tools or ()):
        kind = spec.get("type")
        where = f"$.tools[{index}]"
        if kind == "function":
            functions.append(function_tool(spec, str(spec.get("name", "")), where))
        elif kind == "namespace":
            namespace = str(spec.get("name", ""))
            for number, inner in enumerate(spec.get("tools") or ()):
                if isinstance(inner, dict) and inner.get("type") == "function":
                    name = str(inner.get("name", ""))
                    flat = flat_name(namespace, name)
                    names[flat] = (namespace, name)
                    functions.append(function_tool(inner, flat, f"{where}.tools[{number}]"))
        else:
            left_out.append(str(kind))
    tool_choice: ToolChoice | None = None
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise InvalidRequestError(f"$.tool_choice: {choice[:40]!r} is not auto, none or required")
        if choice == "required" and not functions:
            raise UnsupportedError(f"$.tool_choice: required, but the only tools are built-in ones "
                                   f"({', '.join(left_out) or 'none'}), which {provider} cannot run", provider=provider)
        tool_choice = choice  # type: ignore[assignment]
    elif isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "function":
            tool_choice = NamedToolChoice(NamedFunction(str(choice.get("name", ""))))
        elif kind == "allowed_tools":
            tool_choice = "required" if choice.get("mode") == "required" else "auto"
            allowed = {str(t.get("name")) for t in choice.get("tools") or () if isinstance(t, dict)}
            functions = [tool for tool in functions if tool.function.name in allowed
                         or names.get(tool.function.name, ("", ""))[1] in allowed]
            if tool_choice == "required" and not functions:
                raise UnsupportedError("$.tool_choice.tools: no function tool is allowed, and " f"{provider} can run "
                                       "no built-in one", provider=provider)
        else:
            raise UnsupportedError(f"$.tool_choice: requires the built-in tool {str(kind)[:40]!r}, which {provider} "
                                   "cannot run; use auto, or send the request to an openai model", provider=provider)
    if not functions:
        return ToolPlan(None, None, names)
    return ToolPlan(functions, tool_choice, names)


def response_format_of(text: TextConfig | None) -> ResponseFormat | None:
    """`text.format` → our `response_format` (`json_schema`'s fields sit in the format itself)."""
    spec = text.format if text is not None else None
    if not spec or spec.get("type") in (None, "text"):
        return None
    if spec.get("type") == "json_object":
        return ResponseFormat("json_object")
    if spec.get("type") != "json_schema":
        raise InvalidRequestError(f"$.text.format.type: {str(spec.get('type'))[:40]!r} is not text, json_object "
                                  "or json_schema")
    schema = spec.get("schema")
    strict = spec.get("strict")
    description = spec.get("description")
    return ResponseFormat("json_schema", JSONSchemaFormat(
        str(spec.get("name", "response")), schema if isinstance(schema, dict) else None,
        description if isinstance(description, str) else None, strict if isinstance(strict, bool) else None))


# --- input items → our messages -------------------------------------------------------


def user_content(content: Any, where: str) -> str | list[ContentPart]:
    """A message's content: a string, or its parts (`input_text`, `output_text`,
    `refusal` → text; `input_image` → an image); one text part is a string."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequestError(f"{where}: must be a string or a list of parts")
    parts: list[ContentPart] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            parts.append(TextPart(str(part.get("text", ""))))
        elif kind == "refusal":
            parts.append(TextPart(str(part.get("refusal", ""))))
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise UnsupportedError(f"{where}[{index}].image_url: send the image as a URL (a data: URL or "
                                       "https://); file_id images need an openai model")
            detail = part.get("detail")
            parts.append(ImagePart(ImageURL(url, detail if detail in ("auto", "low", "high") else None)))
        else:
            raise UnsupportedError(f"{where}[{index}].type: {str(kind)[:40]!r} parts need an openai model; send "
                                   "input_text and input_image parts")
    if len(parts) == 1 and type(parts[0]) is TextPart:
        return parts[0].text
    return parts


class Turns:
    """Input items → messages: an assistant turn gathers the text, calls and reasoning
    items in a row (reasoning first, as the target wants it back)."""

    __slots__ = ("calls", "messages", "names", "text", "thinking")

    def __init__(self, names: dict[str, tuple[str, str]]) -> None:
        self.messages: list[ChatMessage] = []
        self.text: list[str] = []
        self.calls: list[ToolCall] = []
        self.thinking: list[ThinkingPart] = []
        self.names = {value: key for key, value in names.items()}

    def close(self) -> None:
        if self.text or self.calls:
            self.messages.append(ChatMessage(role="assistant", content="".join(self.text),
                                             tool_calls=self.calls or None, thinking=self.thinking or None))
        self.text, self.calls, self.thinking = [], [], []

    def add(self, item: Item, where: str) -> None:
        kind = item.get("type") or "message"
        if kind == "message":
            role = item.get("role")
            content = item.get("content", "")
            if role == "assistant":
                text = user_content(content, f"{where}.content")
                self.text.append(text if type(text) is str else "".join(
                    part.text for part in text if type(part) is TextPart))  # type: ignore[union-attr]
                return
            self.close()
            if role in ("system", "developer"):
                text = user_content(content, f"{where}.content")
                self.messages.append(ChatMessage(role="system", content=text if type(text) is str else "\n".join(
                    part.text for part in text if type(part) is TextPart)))  # type: ignore[union-attr]
            elif role == "user":
                self.messages.append(ChatMessage(role="user", content=user_content(content, f"{where}.content")))
            else:
                raise InvalidRequestError(f"{where}.role: {str(role)[:40]!r} is not user, assistant, system or "
                                          "developer")
        elif kind == "function_call":
            name = str(item.get("name", ""))
            namespace = item.get("namespace")
            if namespace:
                name = self.names.get((namespace, name)) or flat_name(str(namespace), name)
            call_id = item.get("call_id") or item.get("id") or ""
            self.calls.append(ToolCall(str(call_id), FunctionCall(name, str(item.get("arguments") or "{}"))))
        elif kind == "function_call_output":
            self.close()
            output = item.get("output", "")
            content = output if isinstance(output, str) else user_content(output, f"{where}.output")
            self.messages.append(ChatMessage(role="tool", content=content, tool_call_id=str(item.get("call_id", ""))))
        elif kind == "reasoning":
            if self.calls or self.text:
                self.close()
            summary = item.get("summary") or ()
            text = "".join(str(part.get("text", "")) for part in summary if isinstance(part, dict))
            signature = item.get("encrypted_content")
            if text or signature:
                self.thinking.append(ThinkingPart(text, signature if isinstance(signature, str) else None))
        else:
            raise UnsupportedError(f"{where}.type: {str(kind)[:40]!r} items need an openai model; send message, "
                                   "function_call, function_call_output, reasoning and item_reference items")


def to_messages(instructions: str | None, items: list[Item], names: dict[str, tuple[str, str]]) -> list[ChatMessage]:
    turns = Turns(names)
    if instructions:
        turns.messages.append(ChatMessage(role="system", content=instructions))
    for index, item in enumerate(items):
        turns.add(item, f"$.input[{index}]")
    turns.close()
    return turns.messages


def is_reference(item: Item) -> bool:
    """An `item_reference` (its `type` may be left out: then it is an `id` and nothing else)."""
    kind = item.get("type")
    return kind == "item_reference" or (kind is None and "role" not in item and "id" in item)


def input_items(value: str | list[dict[str, Any]] | None) -> list[Item]:
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}] if value else []
    return value


# --- the answer -----------------------------------------------------------------------

MESSAGE, REASONING, CALLS = 1, 2, 3


def item_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def usage_object(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {"input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens or 0,
                                     "cache_write_tokens": usage.cache_creation_tokens or 0},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens or 0},
            "total_tokens": usage.total_tokens}


def status_of(finish_reason: FinishReason | None) -> tuple[str, dict[str, str] | None]:
    if finish_reason is FinishReason.LENGTH:
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason is FinishReason.CONTENT_FILTER:
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def error_code(error: GatewayError) -> str:
    """`response.error.code` (OpenAI's list) for our error."""
    return "rate_limit_exceeded" if error.type == "rate_limited" else "server_error"


def message_item(item_id_: str, text: str, status: str = "completed") -> Item:
    return {"id": item_id_, "type": "message", "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def reasoning_item(item_id_: str, text: str, signature: str | None) -> Item:
    item: Item = {"id": item_id_, "type": "reasoning",
                  "summary": [{"type": "summary_text", "text": text}] if text else []}
    if signature is not None:
        item["encrypted_content"] = signature
    return item


def call_item(item_id_: str, call_id: str, name: str, arguments: str, names: dict[str, tuple[str, str]],
              status: str = "completed") -> Item:
    item: Item = {"id": item_id_, "type": "function_call", "status": status, "arguments": arguments,
                  "call_id": call_id, "name": name}
    namespaced = names.get(name)
    if namespaced is not None:
        item["namespace"], item["name"] = namespaced
    return item


def visible(item: Item, show_signature: bool) -> Item:
    """An item as the client sees it: `encrypted_content` only when `include` asked for it."""
    if show_signature or "encrypted_content" not in item:
        return item
    return {key: value for key, value in item.items() if key != "encrypted_content"}


class OpenCall:
    __slots__ = ("arguments", "call_id", "head", "item_id", "name", "output_index")

    def __init__(self, item_id_: str, output_index: int, call_id: str, name: str, head: bytes) -> None:
        self.item_id = item_id_
        self.output_index = output_index
        self.call_id = call_id
        self.name = name
        self.arguments: list[str] = []
        self.head = head


class ResponsesFrames:
    """One response as Responses events (the `pipeline.Frames` protocol).

    The created/in-progress events go out with the first frame; an item opens when its
    first piece comes and closes (its `.done` events) when another kind of item begins or
    the answer ends. A delta frame is its item's prebuilt head, the JSON string of the
    piece and the `sequence_number`. `numbered` (a background stream): each event also
    carries `id: <sequence_number + 1>` (`last_id` is the next sequence number). A
    passthrough's events (`raw`) go out as they came, and its final chunk adds nothing.
    """

    __slots__ = (
        "base",
        "calls",
        "closing",
        "completed",
        "final_sent",
        "head",
        "item_id",
        "items",
        "kind",
        "last_id",
        "model",
        "names",
        "numbered",
        "output_index",
        "parts",
        "passthrough",
        "show_signature",
        "signed",
        "started",
        "stream_id",
        "summary_open",
    )

    def __init__(self, base: dict[str, Any], show_signature: bool, names: dict[str, tuple[str, str]],
                 numbered: bool = False) -> None:
        self.base = base
        self.model: str = base["model"]
        self.show_signature = show_signature
        self.names = names
        self.numbered = numbered
        self.stream_id: str | None = base["id"] if numbered else None
        self.last_id = 0  # the next sequence number
        self.final_sent = False
        self.started = False
        self.passthrough = False
        self.items: list[Item] = []  # the finished output items, whole
        self.kind = 0
        self.item_id = ""
        self.output_index = 0
        self.parts: list[str] = []
        self.signed: str | None = None
        self.summary_open = False
        self.head = b""
        self.calls: dict[int, OpenCall] = {}
        self.completed: dict[str, Any] | None = None
        self.closing = b""

    # --- the events

    def event(self, name: str, payload: dict[str, Any]) -> bytes:
        sequence = self.last_id
        self.last_id = sequence + 1
        payload["sequence_number"] = sequence
        frame = b"event: %b\ndata: %b\n\n" % (name.encode(), json_encoder.encode(payload))
        return b"id: %d\n%b" % (sequence + 1, frame) if self.numbered else frame

    def delta(self, head: bytes, piece: str) -> bytes:
        sequence = self.last_id
        self.last_id = sequence + 1
        frame = b'%b%b,"sequence_number":%d}\n\n' % (head, json_encoder.encode(piece), sequence)
        return b"id: %d\n%b" % (sequence + 1, frame) if self.numbered else frame

    def response(self, status: str, **fields: Any) -> dict[str, Any]:
        return {**self.base, "status": status, **fields}

    def begin(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        return (self.event("response.created", {"type": "response.created", "response": self.response("in_progress")})
                + self.event("response.in_progress",
                             {"type": "response.in_progress", "response": self.response("in_progress")}))

    def delta_head(self, kind: str, fields: str) -> bytes:
        return b'event: %b\ndata: {"type":"%b",%b,"delta":' % (kind.encode(), kind.encode(), fields.encode())

    # --- opening and closing items

    def open_item(self, kind: int, prefix: str, item: Item) -> bytes:
        out = self.begin() + self.close()
        self.kind = kind
        self.item_id = item["id"] = item_id(prefix)
        self.output_index = len(self.items)
        self.parts = []
        return out + self.event("response.output_item.added", {
            "type": "response.output_item.added", "output_index": self.output_index, "item": item})

    def open_message(self) -> bytes:
        out = self.open_item(MESSAGE, "msg", {"type": "message", "status": "in_progress", "role": "assistant",
                                              "content": []})
        where = f'"item_id":"{self.item_id}","output_index":{self.output_index},"content_index":0,"logprobs":[]'
        self.head = self.delta_head("response.output_text.delta", where)
        return out + self.event("response.content_part.added", {
            "type": "response.content_part.added", "item_id": self.item_id, "output_index": self.output_index,
            "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})

    def open_reasoning(self, summary: bool) -> bytes:
        out = self.open_item(REASONING, "rs", {"type": "reasoning", "summary": []})
        self.signed = None
        self.summary_open = summary
        if not summary:
            return out
        where = f'"item_id":"{self.item_id}","output_index":{self.output_index},"summary_index":0'
        self.head = self.delta_head("response.reasoning_summary_text.delta", where)
        return out + self.event("response.reasoning_summary_part.added", {
            "type": "response.reasoning_summary_part.added", "item_id": self.item_id,
            "output_index": self.output_index, "summary_index": 0, "part": {"type": "summary_text", "text": ""}})

    def close(self) -> bytes:
        """The `.done` events of the open item(s); they join `items`."""
        kind, self.kind = self.kind, 0
        if kind == MESSAGE:
            return self.close_message()
        if kind == REASONING:
            return self.close_reasoning()
        if kind == CALLS:
            return self.close_calls()
        return b""

    def item_done(self, item: Item, output_index: int) -> bytes:
        self.items.append(item)
        return self.event("response.output_item.done", {
            "type": "response.output_item.done", "output_index": output_index,
            "item": visible(item, self.show_signature)})

    def close_message(self) -> bytes:
        text = "".join(self.parts)
        where = {"item_id": self.item_id, "output_index": self.output_index, "content_index": 0}
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        return (self.event("response.output_text.done", {"type": "response.output_text.done", **where, "text": text,
                                                         "logprobs": []})
                + self.event("response.content_part.done", {"type": "response.content_part.done", **where,
                                                            "part": part})
                + self.item_done(message_item(self.item_id, text), self.output_index))

    def close_reasoning(self) -> bytes:
        text = "".join(self.parts)
        out = b""
        if self.summary_open:
            where = {"item_id": self.item_id, "output_index": self.output_index, "summary_index": 0}
            out = (self.event("response.reasoning_summary_text.done", {
                "type": "response.reasoning_summary_text.done", **where, "text": text})
                   + self.event("response.reasoning_summary_part.done", {
                       "type": "response.reasoning_summary_part.done", **where,
                       "part": {"type": "summary_text", "text": text}}))
        return out + self.item_done(reasoning_item(self.item_id, text, self.signed), self.output_index)

    def close_calls(self) -> bytes:
        out = []
        for call in self.calls.values():
            arguments = "".join(call.arguments)
            out.append(self.event("response.function_call_arguments.done", {
                "type": "response.function_call_arguments.done", "item_id": call.item_id,
                "output_index": call.output_index, "arguments": arguments}))
            item = call_item(call.item_id, call.call_id, call.name, arguments, self.names)
            self.items.append(item)  # in the order the calls began: output_index order
            out.append(self.event("response.output_item.done", {
                "type": "response.output_item.done", "output_index": call.output_index, "item": item}))
        self.calls = {}
        return b"".join(out)

    # --- Frames

    def content(self, chunk: StreamChunk) -> bytes:
        if self.kind != MESSAGE:
            out = self.open_message()
            self.parts.append(chunk.content)
            return out + self.delta(self.head, chunk.content)
        self.parts.append(chunk.content)
        return self.delta(self.head, chunk.content)

    def reasoning(self, chunk: ReasoningChunk) -> bytes:
        out = b""
        if self.kind != REASONING or not self.summary_open:
            out = self.open_reasoning(summary=True)
        self.parts.append(chunk.reasoning)
        return out + self.delta(self.head, chunk.reasoning)

    def signature(self, chunk: SignatureChunk) -> bytes:
        if self.kind == REASONING:
            self.signed = chunk.signature
            return b""
        out = self.open_reasoning(summary=False)  # signed reasoning not shown: an item of its own
        self.signed = chunk.signature
        return out + self.close()

    def tool_call(self, chunk: ToolCallChunk) -> bytes:
        out = b""
        call = self.calls.get(chunk.index) if self.kind == CALLS else None
        if call is None:
            if self.kind != CALLS:
                out = self.begin() + self.close()
                self.kind = CALLS
            output_index = len(self.items) + len(self.calls)
            call_id = chunk.id or f"call_{secrets.token_hex(12)}"
            new_id = item_id("fc")
            where = f'"item_id":"{new_id}","output_index":{output_index}'
            call = self.calls[chunk.index] = OpenCall(new_id, output_index, call_id, chunk.name or "",
                                                      self.delta_head("response.function_call_arguments.delta", where))
            out += self.event("response.output_item.added", {
                "type": "response.output_item.added", "output_index": output_index,
                "item": call_item(new_id, call_id, call.name, "", self.names, "in_progress")})
        if chunk.arguments:
            call.arguments.append(chunk.arguments)
            out += self.delta(call.head, chunk.arguments)
        return out

    def raw(self, chunk: RawEvent) -> bytes:
        self.passthrough = True
        return chunk.data

    def complete(self, chunk: StreamChunk) -> dict[str, Any]:
        """The whole response at the final chunk (its items' `.done` events made, kept for
        `final`): what is stored, and what `response.completed` carries."""
        if self.completed is None:
            self.closing = self.begin() + self.close()
            status, incomplete = status_of(chunk.finish_reason)
            self.completed = self.response(
                status, incomplete_details=incomplete, completed_at=int(time.time()),
                output=[visible(item, self.show_signature) for item in self.items], usage=usage_object(chunk.usage))
        return self.completed

    def final(self, chunk: StreamChunk) -> bytes:
        if self.passthrough:
            return b""
        response = self.complete(chunk)
        self.final_sent = True
        name = "response.completed" if response["status"] == "completed" else "response.incomplete"
        return self.closing + self.event(name, {"type": name, "response": response})

    def failure(self, error: GatewayError, final_sent: bool, usage: Usage | None) -> bytes:
        """An `error` event, then (unless the response ended already) `response.failed`
        with the items so far."""
        if self.passthrough:
            return self.event("error", {"type": "error", "code": error.type, "message": error.message, "param": None})
        out = self.begin()
        if not final_sent:
            out += self.close()
        out += self.event("error", {"type": "error", "code": error.type, "message": error.message, "param": None})
        if final_sent:
            return out
        self.completed = self.failed(error, usage)
        self.final_sent = True
        return out + self.event("response.failed", {"type": "response.failed", "response": self.completed})

    def failed(self, error: GatewayError, usage: Usage | None) -> dict[str, Any]:
        """The response as `error` ended it, with the items finished so far."""
        status = "cancelled" if isinstance(error, CancelledError) else "failed"
        return self.response(status, error={"code": error_code(error), "message": error.message},
                             output=[visible(item, self.show_signature) for item in self.items],
                             usage=usage_object(usage))

    def done(self) -> bytes:
        return b""

    def meta(self) -> dict[str, Any]:
        """What `restore` needs to end this stream in words when its producer was lost."""
        return {"dialect": "responses", "base": self.base}

    @classmethod
    def restore(cls, meta: dict[str, Any]) -> ResponsesFrames:
        frames = cls(meta["base"], False, {}, numbered=True)
        frames.started = True
        return frames


def answer_items(answer: CollectedAnswer, names: dict[str, tuple[str, str]]) -> list[Item]:
    """The output items of an answer read whole: reasoning, text, then the calls."""
    items: list[Item] = []
    if answer.reasoning or answer.signature:
        items.append(reasoning_item(item_id("rs"), answer.reasoning or "", answer.signature))
    if answer.content or not answer.tool_calls:
        items.append(message_item(item_id("msg"), answer.content))
    for call in answer.tool_calls or ():
        items.append(call_item(item_id("fc"), call.id, call.function.name, call.function.arguments, names))
    return items


# --- one request ----------------------------------------------------------------------

#: Client headers never forwarded to the upstream by a passthrough.
_NOT_FORWARDED = frozenset({b"authorization", b"x-api-key", b"host", b"content-length", b"content-type",
                            b"connection", b"transfer-encoding", b"accept-encoding", b"cookie", b"origin",
                            b"user-agent", b"accept", b"keep-alive", b"upgrade", b"te", b"trailer"})


def forwarded_headers(scope: Scope) -> list[tuple[str, str]]:
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]
            if name not in _NOT_FORWARDED and not name.startswith(b"x-stainless")]


def with_model(body: bytes, model: str) -> bytes:
    """`body` with `model` replaced (a route or a `openai/` prefix names another)."""
    fields = msgspec.json.decode(body)
    fields["model"] = model
    return json_encoder.encode(fields)


async def open_passthrough(target: Target, body: bytes, headers: list[tuple[str, str]], *, stream: bool,
                           path: str = "/responses", method: str = "POST") -> ChunkStream:
    # imported on use: it is built with the openai adapter
    from ..providers.openai_responses import open_responses_passthrough

    return await open_responses_passthrough(target.adapter, body, headers, stream=stream, path=path, method=method)


class Exchange:
    """One translated request: its items (resolved against the store), its frames, and its
    storing at the end."""

    def __init__(self, request: ResponsesRequest, store: ResponseStore, frames: ResponsesFrames,
                 plan: ToolPlan | None, keep: bool) -> None:
        self.request = request
        self.store = store
        self.frames = frames
        self.plan = plan
        self.keep = keep  # stored at the end (`store` not false)
        self.items: list[Item] = []  # the conversation's input items, resolved
        self.new_items: list[Item] = []  # those this request brought
        self.chat: ChatRequest | None = None

    async def resolve(self, provider: str, model: str) -> ChatRequest:
        """Our request: the stored conversation (`previous_response_id`), the new input with
        its references read from the store, the instructions and tools."""
        if self.chat is not None:
            return msgspec.structs.replace(self.chat, provider=provider, model=model)
        request = self.request
        if self.plan is None:  # the first target was openai's: tools are checked for this one
            self.plan = plan_tools(request.tools, request.tool_choice, provider)
            self.frames.names = self.plan.names
        items: list[Item] = []
        if request.previous_response_id:
            stored = await self.store.get(request.previous_response_id)
            if stored is None:
                raise not_found(request.previous_response_id)
            items = list(stored.items)
        new = input_items(request.input)
        wanted = [item["id"] for item in new if isinstance(item.get("id"), str)
                  and (is_reference(item) or (item.get("type") == "reasoning" and not item.get("encrypted_content")))]
        found = await self.store.items(wanted) if wanted else {}
        if found or any(is_reference(item) for item in new):
            new = [self.resolved(item, found, index) for index, item in enumerate(new)]
        self.new_items = new
        self.items = items + new
        effort = request.reasoning.effort if request.reasoning is not None else None
        summary = request.reasoning.summary if request.reasoning is not None else None
        if effort is not None and effort not in EFFORTS:
            raise InvalidRequestError(f"$.reasoning.effort: {effort[:40]!r} is not one of {', '.join(EFFORTS)}")
        chat = ChatRequest(
            messages=to_messages(request.instructions, self.items, self.plan.names), provider=provider, model=model,
            temperature=request.temperature, max_tokens=request.max_output_tokens,
            reasoning_effort=EFFORTS[effort] if effort is not None else None,
            include_reasoning=summary not in (None, "none"), response_format=response_format_of(request.text),
            tools=self.plan.tools, tool_choice=self.plan.tool_choice, resumable=bool(request.background))
        if not chat.messages:
            raise InvalidRequestError("$.input: no input; send at least one message")
        check_request(chat)
        self.chat = chat
        return chat

    @staticmethod
    def resolved(item: Item, found: dict[str, Item], index: int) -> Item:
        if is_reference(item):
            stored = found.get(item.get("id", ""))
            if stored is None:
                raise ResponseNotFoundError(f"$.input[{index}].id: no stored item with id "
                                            f"{str(item.get('id'))[:100]!r}")
            return stored
        return found.get(item.get("id", ""), item) if item.get("type") == "reasoning" else item

    async def save(self, response: dict[str, Any], output: list[Item]) -> None:
        await self.store.put(StoredResponse(response, self.items + output), self.new_items + output)

    async def storing(self, stream: ChunkStream) -> AsyncGenerator[Any, None]:
        """The chunks of `stream`; at the final one, the response is stored before it goes on
        (so its `response.completed` never reaches a client before the store has it)."""
        usage: Usage | None = None
        try:
            async for chunk in stream:
                if type(chunk) is StreamChunk:
                    if chunk.usage is not None:
                        usage = chunk.usage
                    if chunk.finish_reason is not None:
                        if chunk.usage is None:
                            chunk.usage = usage
                        response = self.frames.complete(chunk)
                        await self.save(response, self.frames.items)
                yield chunk
        except GatewayError as error:  # a background response is readable as failed
            if self.request.background and self.frames.completed is None:
                await self.save(self.frames.failed(error, usage), self.frames.items)
            raise

    async def send_answer(self, send: Send, answer: CollectedAnswer) -> None:
        """Not streamed: the `response` object (a passthrough's as the upstream sent it)."""
        if answer.raw:
            await send_json(send, 200, answer.raw)
            return
        frames = self.frames
        final = answer.final
        items = answer_items(answer, frames.names)
        status, incomplete = status_of(final.finish_reason)
        response = frames.response(status, incomplete_details=incomplete, completed_at=int(time.time()),
                                   output=[visible(item, frames.show_signature) for item in items],
                                   usage=usage_object(final.usage))
        if self.keep:
            await self.save(response, items)
        await send_json(send, 200, json_encoder.encode(response))


# --- the dialect ----------------------------------------------------------------------


async def send_responses_error(send: Send, error: GatewayError) -> None:
    """OpenAI's error shape; an error the upstream (`openai`) sent goes as it came."""
    if error.upstream_body:
        await send_json(send, error.status, error.upstream_body, error_headers(error))
        return
    await send_openai_error(send, error)


class ResponsesDialect:
    """`POST /v1/responses`: a passthrough to `openai`, translated to any other provider."""

    def __init__(self, gateway: Gateway, store: ResponseStore) -> None:
        self.gateway = gateway
        self.store = store

    def prepare(self, body: bytes, scope: Scope) -> Call:
        request: ResponsesRequest = decode_json(body, responses_request_decoder)
        targets = self.gateway.targets(request.model, "openai")
        first = targets[0]
        streaming = bool(request.stream)
        headers = forwarded_headers(scope)
        passthrough = first.adapter.name == "openai"
        background = bool(request.background) and streaming and not passthrough
        keep = request.store is not False or background
        # To openai every tool goes as it is: they are planned only for a translated target.
        plan = plan_tools(request.tools, request.tool_choice, first.adapter.name) if not passthrough else None
        include = request.include or ()
        frames = ResponsesFrames(self.base(request, keep), ENCRYPTED_CONTENT in include,
                                 plan.names if plan is not None else {}, background)
        exchange = Exchange(request, self.store, frames, plan, keep)

        async def open_target(target: Target) -> ChunkStream:
            if target.adapter.name == "openai":
                sent = body if target.model == request.model else with_model(body, target.model)
                return await open_passthrough(target, sent, headers, stream=streaming)
            chat = await exchange.resolve(target.adapter.name, target.model)
            stream = await target.adapter.stream_chat(chat)
            if not (keep and streaming):
                return stream
            if background:  # readable (`in_progress`) from its first event on
                await exchange.store.put(StoredResponse(frames.response("in_progress"), exchange.items), ())
            return ChunkStream(exchange.storing(stream), stream.aclose)

        return Call(provider=first.adapter.name, model=first.model, open=self.gateway.opener(targets, open_target),
                    frames=frames, streaming=streaming, resumable=background, send_answer=exchange.send_answer)

    @staticmethod
    def base(request: ResponsesRequest, keep: bool) -> dict[str, Any]:
        """The response object's fields that echo the request."""
        reasoning = request.reasoning
        text_format = request.text.format if request.text is not None and request.text.format else {"type": "text"}
        return {
            "id": f"resp_{secrets.token_hex(24)}", "object": "response", "created_at": int(time.time()),
            "status": "in_progress", "background": bool(request.background), "error": None,
            "incomplete_details": None, "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens, "model": request.model, "output": [],
            "parallel_tool_calls": request.parallel_tool_calls is not False,
            "previous_response_id": request.previous_response_id,
            "reasoning": {"effort": reasoning.effort, "summary": reasoning.summary} if reasoning is not None
            else {"effort": None, "summary": None},
            "store": keep, "temperature": request.temperature, "text": {"format": text_format},
            "tool_choice": request.tool_choice or "auto", "tools": request.tools or [], "top_p": request.top_p,
            "truncation": request.truncation or "disabled", "usage": None, "user": request.user,
            "metadata": request.metadata or {},
        }

    send_error = staticmethod(send_responses_error)
    error_status = staticmethod(openai_status)


# --- stored responses: GET, DELETE, cancel --------------------------------------------


def query(scope: Scope) -> dict[str, str]:
    pairs = (pair.partition(b"=") for pair in scope.get("query_string", b"").split(b"&") if pair)
    return {name.decode("latin-1"): value.decode("latin-1") for name, _, value in pairs}


class StoredEndpoint:
    """`GET`/`DELETE /v1/responses/{id}` and `POST /v1/responses/{id}/cancel`: a response
    this gateway stored, else the `openai` upstream's own (passed through), else a 404."""

    def __init__(self, gateway: Gateway, store: ResponseStore, action: str) -> None:
        self.gateway = gateway
        self.store = store
        self.action = action  # "get", "delete" or "cancel"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response_id: str = scope["path_params"]["response_id"]
        params = query(scope)
        try:
            stored = await self.store.get(response_id)
            if stored is None:
                await self.upstream(scope, receive, send, response_id)
                return
            if self.action == "delete":
                await self.store.delete(response_id)
                body = {"id": response_id, "object": "response", "deleted": True}
                await send_json(send, 200, json_encoder.encode(body))
            elif self.action == "cancel":
                await self.cancel(send, response_id, stored)
            elif params.get("stream") == "true":
                await self.replay(scope, receive, send, response_id, params.get("starting_after"))
            else:
                await send_json(send, 200, json_encoder.encode(stored.response))
        except GatewayError as error:
            await send_responses_error(send, error)

    async def upstream(self, scope: Scope, receive: Receive, send: Send, response_id: str) -> None:
        """The `openai` upstream's stored response (its own ids), when `openai` is configured."""
        adapter = self.gateway.adapters.get("openai")
        if adapter is None or not adapter.configured or not UPSTREAM_ID.fullmatch(response_id):
            raise not_found(response_id)
        method = {"get": "GET", "delete": "DELETE", "cancel": "POST"}[self.action]
        path = f"/responses/{response_id}" + ("/cancel" if self.action == "cancel" else "")
        query_string = scope.get("query_string", b"").decode("latin-1")
        streaming = self.action == "get" and query(scope).get("stream") == "true"
        target = Target(adapter, "")
        headers = forwarded_headers(scope)
        frames = ResponsesFrames({"id": response_id, "model": "openai"}, False, {})

        def open_upstream() -> Awaitable[ChunkStream]:
            return open_passthrough(target, b"", headers, stream=streaming, method=method,
                                    path=path + (f"?{query_string}" if query_string else ""))

        async def send_raw(send_: Send, answer: CollectedAnswer) -> None:
            await send_json(send_, 200, answer.raw)

        call = Call(provider="openai", model="-", open=open_upstream, frames=frames, streaming=streaming,
                    send_answer=send_raw)
        await run_chat(call, receive, send, self.gateway.settings.sse_heartbeat_s, send_error=send_responses_error)

    async def replay(self, scope: Scope, receive: Receive, send: Send, response_id: str,
                     starting_after: str | None) -> None:
        """A background response's events after `starting_after`, then live to its end."""
        if starting_after is not None and not (starting_after.isdigit() and len(starting_after) < 18):
            raise InvalidRequestError("starting_after: must be a sequence number, a non-negative integer")
        streams = self.gateway.streams
        try:
            reader = await streams.store.open(response_id)
        except GatewayError:
            raise InvalidRequestError(f"response '{response_id[:100]}' was not created with background: true and "
                                      "stream: true (or its events expired, RESUME_TTL_S); only such a response "
                                      "streams again") from None
        after = int(starting_after) + 1 if starting_after is not None else 0
        progress = StreamProgress()
        async with ClientWatch(receive, send, progress, streams.heartbeat_s):
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            progress.last_sent_at = time.monotonic()
            progress.streaming = True
            async for data in streams.replay(reader, after):
                await send({"type": "http.response.body", "body": data, "more_body": True})
                progress.last_sent_at = time.monotonic()
            progress.streaming = False
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def cancel(self, send: Send, response_id: str, stored: StoredResponse) -> None:
        """Stop a background response; answer it as it ended (`cancelled`, or as it was)."""
        if not stored.response.get("background"):
            raise InvalidRequestError(f"response '{response_id[:100]}' was not created with background: true; "
                                      "only a background response can be cancelled")
        streams = self.gateway.streams
        try:
            await streams.store.cancel(response_id)
            reader = await streams.store.open(response_id)
            async with asyncio.timeout(2 * streams.heartbeat_s):
                async for _ in reader.batches():
                    pass
        except (GatewayError, TimeoutError, StreamLost):
            pass
        current = await self.store.get(response_id) or stored
        response = current.response
        if response.get("status") in ("in_progress", "queued"):
            response = {**response, "status": "cancelled"}
            await self.store.put(StoredResponse(response, current.items), ())
        await send_json(send, 200, json_encoder.encode(response))


async def refuse_websocket(websocket: WebSocket) -> None:
    """Codex asks for a WebSocket first: a `426` sends it to plain HTTP at once."""
    from starlette.responses import JSONResponse

    body = {"error": {"message": "this gateway serves /v1/responses over HTTP only; POST it", "type":
                      "invalid_request_error", "param": None, "code": "websocket_not_supported"}}
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(body, status_code=426))
    else:
        await websocket.close(code=1008)


def routes(gateway: Gateway) -> list[BaseRoute]:
    store = store_for(gateway.settings.responses_ttl_s, gateway.streams.store)
    dialect = ResponsesDialect(gateway, store)
    return [
        Route("/v1/responses", ChatEndpoint(dialect, gateway.settings, gateway.streams), methods=["POST"]),
        WebSocketRoute("/v1/responses", refuse_websocket),
        Route("/v1/responses/{response_id}", StoredEndpoint(gateway, store, "get"), methods=["GET"]),
        Route("/v1/responses/{response_id}", StoredEndpoint(gateway, store, "delete"), methods=["DELETE"]),
        Route("/v1/responses/{response_id}/cancel", StoredEndpoint(gateway, store, "cancel"), methods=["POST"]),
    ]


RESTORERS = {"responses": ResponsesFrames.restore}
ERROR_SENDERS = {"/v1/responses": send_responses_error}
