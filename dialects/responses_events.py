"""A translated answer as Responses events and items: `ResponsesFrames` (the
`pipeline.Frames` of `/v1/responses`) and, for an answer read whole, `answer_items`."""

from __future__ import annotations

import secrets
import time
from typing import Any

from ..chat_types import (
    FinishReason,
    RawEvent,
    ReasoningChunk,
    SignatureChunk,
    StreamChunk,
    ToolCallChunk,
    Usage,
    json_encoder,
)
from ..errors import CancelledError, GatewayError
from ..pipeline import CollectedAnswer
from ..responses_store import Item

# --- the answer -----------------------------------------------------------------------

MESSAGE, REASONING, CALLS = 1, 2, 3


def item_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def usage_object(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens or 0,
            "cache_write_tokens": usage.cache_creation_tokens or 0,
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens or 0},
        "total_tokens": usage.total_tokens,
    }


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
    return {
        "id": item_id_,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def reasoning_item(item_id_: str, text: str, signature: str | None) -> Item:
    item: Item = {
        "id": item_id_,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text}] if text else [],
    }
    if signature is not None:
        item["encrypted_content"] = signature
    return item


def call_item(
    item_id_: str, call_id: str, name: str, arguments: str, names: dict[str, tuple[str, str]], status: str = "completed"
) -> Item:
    item: Item = {
        "id": item_id_,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }
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
        "unshown",
    )

    def __init__(
        self, base: dict[str, Any], show_signature: bool, names: dict[str, tuple[str, str]], numbered: bool = False
    ) -> None:
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
        self.unshown: list[str] = []  # signatures of reasoning not shown, for items at the end
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
        return self.event(
            "response.created", {"type": "response.created", "response": self.response("in_progress")}
        ) + self.event(
            "response.in_progress", {"type": "response.in_progress", "response": self.response("in_progress")}
        )

    def delta_head(self, kind: str, fields: str) -> bytes:
        return b'event: %b\ndata: {"type":"%b",%b,"delta":' % (kind.encode(), kind.encode(), fields.encode())

    # --- opening and closing items

    def open_item(self, kind: int, prefix: str, item: Item) -> bytes:
        out = self.begin() + self.close()
        self.kind = kind
        self.item_id = item["id"] = item_id(prefix)
        self.output_index = len(self.items)
        self.parts = []
        return out + self.event(
            "response.output_item.added",
            {"type": "response.output_item.added", "output_index": self.output_index, "item": item},
        )

    def open_message(self) -> bytes:
        out = self.open_item(
            MESSAGE, "msg", {"type": "message", "status": "in_progress", "role": "assistant", "content": []}
        )
        where = f'"item_id":"{self.item_id}","output_index":{self.output_index},"content_index":0,"logprobs":[]'
        self.head = self.delta_head("response.output_text.delta", where)
        return out + self.event(
            "response.content_part.added",
            {
                "type": "response.content_part.added",
                "item_id": self.item_id,
                "output_index": self.output_index,
                "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
            },
        )

    def open_reasoning(self, summary: bool) -> bytes:
        out = self.open_item(REASONING, "rs", {"type": "reasoning", "summary": []})
        self.signed = None
        self.summary_open = summary
        if not summary:
            return out
        where = f'"item_id":"{self.item_id}","output_index":{self.output_index},"summary_index":0'
        self.head = self.delta_head("response.reasoning_summary_text.delta", where)
        return out + self.event(
            "response.reasoning_summary_part.added",
            {
                "type": "response.reasoning_summary_part.added",
                "item_id": self.item_id,
                "output_index": self.output_index,
                "summary_index": 0,
                "part": {"type": "summary_text", "text": ""},
            },
        )

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
        return self.event(
            "response.output_item.done",
            {
                "type": "response.output_item.done",
                "output_index": output_index,
                "item": visible(item, self.show_signature),
            },
        )

    def close_message(self) -> bytes:
        text = "".join(self.parts)
        where = {"item_id": self.item_id, "output_index": self.output_index, "content_index": 0}
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        return (
            self.event(
                "response.output_text.done",
                {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
            )
            + self.event("response.content_part.done", {"type": "response.content_part.done", **where, "part": part})
            + self.item_done(message_item(self.item_id, text), self.output_index)
        )

    def close_reasoning(self) -> bytes:
        text = "".join(self.parts)
        out = b""
        if self.summary_open:
            where = {"item_id": self.item_id, "output_index": self.output_index, "summary_index": 0}
            out = self.event(
                "response.reasoning_summary_text.done",
                {"type": "response.reasoning_summary_text.done", **where, "text": text},
            ) + self.event(
                "response.reasoning_summary_part.done",
                {
                    "type": "response.reasoning_summary_part.done",
                    **where,
                    "part": {"type": "summary_text", "text": text},
                },
            )
        return out + self.item_done(reasoning_item(self.item_id, text, self.signed), self.output_index)

    def close_calls(self) -> bytes:
        out = []
        for call in self.calls.values():
            arguments = "".join(call.arguments)
            out.append(
                self.event(
                    "response.function_call_arguments.done",
                    {
                        "type": "response.function_call_arguments.done",
                        "item_id": call.item_id,
                        "output_index": call.output_index,
                        "arguments": arguments,
                    },
                )
            )
            item = call_item(call.item_id, call.call_id, call.name, arguments, self.names)
            self.items.append(item)  # in the order the calls began: output_index order
            out.append(
                self.event(
                    "response.output_item.done",
                    {"type": "response.output_item.done", "output_index": call.output_index, "item": item},
                )
            )
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
        if self.kind != REASONING or not self.summary_open or self.signed is not None:  # a signed one is whole
            out = self.open_reasoning(summary=True)
        self.parts.append(chunk.reasoning)
        return out + self.delta(self.head, chunk.reasoning)

    def signature(self, chunk: SignatureChunk) -> bytes:
        """The signature of the reasoning item streaming, in its `encrypted_content`; one
        that signs no reasoning shown (thinking not asked to be shown, a Gemini text part's
        signature) waits, and ends the answer as a reasoning item of its own, so a message
        streaming is not cut in two."""
        if self.kind == REASONING and self.signed is None:
            self.signed = chunk.signature
        else:
            self.unshown.append(chunk.signature)
        return b""

    def close_unshown(self) -> bytes:
        """The signatures of reasoning not shown, each a reasoning item with no summary."""
        out = b""
        for signature in self.unshown:
            out += self.open_reasoning(summary=False)
            self.signed = signature
            out += self.close()
        self.unshown = []
        return out

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
            call = self.calls[chunk.index] = OpenCall(
                new_id,
                output_index,
                call_id,
                chunk.name or "",
                self.delta_head("response.function_call_arguments.delta", where),
            )
            out += self.event(
                "response.output_item.added",
                {
                    "type": "response.output_item.added",
                    "output_index": output_index,
                    "item": call_item(new_id, call_id, call.name, "", self.names, "in_progress"),
                },
            )
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
            self.closing = self.begin() + self.close() + self.close_unshown()
            status, incomplete = status_of(chunk.finish_reason)
            self.completed = self.response(
                status,
                incomplete_details=incomplete,
                completed_at=int(time.time()),
                output=[visible(item, self.show_signature) for item in self.items],
                usage=usage_object(chunk.usage),
            )
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
            out += self.close() + self.close_unshown()
        out += self.event("error", {"type": "error", "code": error.type, "message": error.message, "param": None})
        if final_sent:
            return out
        self.completed = self.failed(error, usage)
        self.final_sent = True
        return out + self.event("response.failed", {"type": "response.failed", "response": self.completed})

    def failed(self, error: GatewayError, usage: Usage | None) -> dict[str, Any]:
        """The response as `error` ended it, with the items finished so far."""
        status = "cancelled" if isinstance(error, CancelledError) else "failed"
        return self.response(
            status,
            error={"code": error_code(error), "message": error.message},
            output=[visible(item, self.show_signature) for item in self.items],
            usage=usage_object(usage),
        )

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
