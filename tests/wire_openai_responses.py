"""OpenAI Responses API wire bytes for tests, an upstream that answers with them, and the
official SDK reading them.

`ResponseScript` writes a streamed response exactly as OpenAI's Responses API sends it:
`event: <type>` and `data: <json>` per event, `sequence_number` 0, 1, 2, …,
`response.created` and `response.in_progress` first, each output item between
`response.output_item.added` and `.done` (reasoning items with their summary parts and
`encrypted_content`, message items with their content part and text deltas, function
calls with their argument deltas), then `response.completed` / `.incomplete` / `.failed`
carrying the whole response and its usage. `response_object` is the same response as a
non-streamed body. `sdk_events` and `sdk_final` prove a script is OpenAI's wire: every
event validates against the SDK's `ResponseStreamEvent` union, and
`client.responses.stream` accumulates it into a `Response`.

`ResponsesUpstream` is a loopback HTTP/1.1 server answering each request with the next
scripted `(status, content type, body)` and recording what it received (method, path,
headers, body bytes).
"""

from __future__ import annotations

import asyncio
import json
import typing
from typing import Any

import httpx2
import openai
import pydantic
from openai.types.responses import Response, ResponseStreamEvent
from streamgate import sse
from wire_openai import LoopbackUpstream, http_chunk

MODEL = "gpt-5.5-2026-04-23"  # what OpenAI names in its responses for `gpt-5.5`
RESPONSE_ID = "resp_68af4030592c81938ec0a5fbab4a3e9f05438e46b5f69a3b"
REASONING_ID = "rs_68af4030baa48193b0b43b4c2a176a1a05438e46b5f69a3b"
MESSAGE_ID = "msg_68af40337e58819392e935fb404414d005438e46b5f69a3b"
CALL_ITEM_ID = "fc_68af4033dfb48193a2b1e1e4ee2d7a8c05438e46b5f69a3b"
ENCRYPTED = (
    "gAAAAABor0A0XU4RwQhP4cVf7Fz3bJ2m0iLZJrj2y0tM2cS6PjW0dW8eL3Pp5pV9Qk3d5qkKfL8l2T0e0ZzR9uYy1Q6rDg4A"
    "aB3c5d7e9f1h3j5l7n9p1r3t5v7x9z1B3D5F7H9J1L3N5P7R9T1V3X5Z7=="
)


def event(kind: str, data: dict[str, Any]) -> bytes:
    """One event as OpenAI's Responses API sends it (compact JSON, `type` first)."""
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data}, ensure_ascii=False)}\n\n".encode()


def usage(
    input_tokens: int = 14, output_tokens: int = 160, reasoning_tokens: int = 128, cached_tokens: int = 0
) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    }


def response_object(
    output: list[dict[str, Any]],
    *,
    status: str = "completed",
    model: str = MODEL,
    usage_: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A `response` object as the API returns it (its fields in the API's order)."""
    return {
        "id": RESPONSE_ID,
        "object": "response",
        "created_at": 1756315696,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "max_tool_calls": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "prompt_cache_key": None,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "safety_identifier": None,
        "service_tier": "default",
        "store": False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage_,
        "user": None,
        "metadata": {},
        **fields,
    }


def reasoning_item(summaries: list[str], *, item_id: str = REASONING_ID, encrypted: str = ENCRYPTED) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "reasoning",
        "encrypted_content": encrypted,
        "summary": [{"type": "summary_text", "text": text} for text in summaries],
    }


def message_item(text: str, status: str = "completed") -> dict[str, Any]:
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    content = [part] if status == "completed" else []
    return {"id": MESSAGE_ID, "type": "message", "status": status, "content": content, "role": "assistant"}


def call_item(
    call_id: str, name: str, arguments: str, status: str = "completed", item_id: str = CALL_ITEM_ID
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


class ResponseScript:
    """A streamed response built item by item; `body()` ends it and returns its bytes."""

    def __init__(self, model: str = MODEL) -> None:
        self.model = model
        self.events: list[bytes] = []
        self.output: list[dict[str, Any]] = []
        self.emit("response.created", response=response_object([], status="in_progress", model=model))
        self.emit("response.in_progress", response=response_object([], status="in_progress", model=model))

    def emit(self, kind: str, **data: Any) -> None:
        self.events.append(event(kind, {**data, "sequence_number": len(self.events)}))

    def reasoning(
        self, summaries: list[list[str]], *, item_id: str = REASONING_ID, encrypted: str = ENCRYPTED
    ) -> ResponseScript:
        """A reasoning item whose summary parts stream as the given delta pieces."""
        index = len(self.output)
        self.emit(
            "response.output_item.added",
            output_index=index,
            item={"id": item_id, "type": "reasoning", "encrypted_content": encrypted, "summary": []},
        )
        texts = []
        for number, pieces in enumerate(summaries):
            text = "".join(pieces)
            texts.append(text)
            where = {"item_id": item_id, "output_index": index, "summary_index": number}
            self.emit("response.reasoning_summary_part.added", **where, part={"type": "summary_text", "text": ""})
            for piece in pieces:
                self.emit("response.reasoning_summary_text.delta", **where, delta=piece, obfuscation="x3Fz")
            self.emit("response.reasoning_summary_text.done", **where, text=text)
            self.emit("response.reasoning_summary_part.done", **where, part={"type": "summary_text", "text": text})
        item = reasoning_item(texts, item_id=item_id, encrypted=encrypted)
        self.emit("response.output_item.done", output_index=index, item=item)
        self.output.append(item)
        return self

    def message(self, pieces: list[str]) -> ResponseScript:
        index = len(self.output)
        text = "".join(pieces)
        where = {"item_id": MESSAGE_ID, "output_index": index, "content_index": 0}
        self.emit("response.output_item.added", output_index=index, item=message_item("", "in_progress"))
        self.emit(
            "response.content_part.added",
            **where,
            part={"type": "output_text", "annotations": [], "logprobs": [], "text": ""},
        )
        for piece in pieces:
            self.emit("response.output_text.delta", **where, delta=piece, logprobs=[], obfuscation="Qm")
        self.emit("response.output_text.done", **where, text=text, logprobs=[])
        self.emit(
            "response.content_part.done",
            **where,
            part={"type": "output_text", "annotations": [], "logprobs": [], "text": text},
        )
        item = message_item(text)
        self.emit("response.output_item.done", output_index=index, item=item)
        self.output.append(item)
        return self

    def function_call(
        self, call_id: str, name: str, fragments: list[str], item_id: str = CALL_ITEM_ID
    ) -> ResponseScript:
        index = len(self.output)
        arguments = "".join(fragments)
        self.emit(
            "response.output_item.added", output_index=index, item=call_item(call_id, name, "", "in_progress", item_id)
        )
        for fragment in fragments:
            self.emit(
                "response.function_call_arguments.delta",
                item_id=item_id,
                output_index=index,
                delta=fragment,
                obfuscation="k",
            )
        self.emit("response.function_call_arguments.done", item_id=item_id, output_index=index, arguments=arguments)
        item = call_item(call_id, name, arguments, "completed", item_id)
        self.emit("response.output_item.done", output_index=index, item=item)
        self.output.append(item)
        return self

    def response(
        self, status: str = "completed", usage_: dict[str, Any] | None = None, **fields: Any
    ) -> dict[str, Any]:
        return response_object(self.output, status=status, model=self.model, usage_=usage_ or usage(), **fields)

    def body(self, status: str = "completed", usage_: dict[str, Any] | None = None, **fields: Any) -> bytes:
        """The events, ended by `response.<status>` (`completed`, `incomplete`, `failed`)."""
        self.emit(f"response.{status}", response=self.response(status, usage_, **fields))
        return b"".join(self.events)


# --- the official SDK reading the same bytes -------------------------------------------------

#: The SDK's event class per `type` (the members of its `ResponseStreamEvent` union).
EVENT_TYPES: dict[str, type[pydantic.BaseModel]] = {
    member.model_fields["type"].annotation.__args__[0]: member  # type: ignore[union-attr]
    for member in typing.get_args(typing.get_args(ResponseStreamEvent)[0])
}


def sdk_events(body: bytes) -> list[Any]:
    """Every event of `body` validated (strictly: every required field, every type) by the
    SDK's class for the `type` its `event:` line names."""
    parsed = []
    for item in sse.Decoder().feed(body):
        if isinstance(item, sse.Event):
            parsed.append(EVENT_TYPES[item.event].model_validate_json(item.data))
    return parsed


def _proof_client(body: bytes, content_type: str = "text/event-stream") -> openai.AsyncOpenAI:
    transport = httpx2.MockTransport(
        lambda _: httpx2.Response(200, headers={"content-type": content_type}, content=body)
    )
    return openai.AsyncOpenAI(
        api_key="sk-proof",
        base_url="https://proof.test/v1",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=transport),
    )


async def final_response(body: bytes) -> Response:
    """`body` accumulated by the SDK's `client.responses.stream()` into the final `Response`."""
    async with _proof_client(body) as client, client.responses.stream(model="gpt-5.5", input="hi") as stream:
        return await stream.get_final_response()


async def created_response(body: bytes) -> Response:
    """A non-streamed body read by the SDK's `client.responses.create()`."""
    async with _proof_client(body, "application/json") as client:
        return await client.responses.create(model="gpt-5.5", input="hi")


def sdk_final(body: bytes) -> Response:
    return asyncio.run(final_response(body))


def sdk_response(body: bytes) -> Response:
    return asyncio.run(created_response(body))


# --- an upstream on 127.0.0.1 ----------------------------------------------------------------


class Received:
    """A request as the upstream received it."""

    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.method, self.path, _ = lines[0].decode().split(" ", 2)
        self.headers = {
            name.decode().lower(): value.decode().strip()
            for name, _, value in (line.partition(b":") for line in lines[1:])
        }

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class ResponsesUpstream:
    """Answers each request with the next scripted reply: a 200 event stream (sent in small
    chunks, so events straddle reads), or `(status, body)` as JSON (a 200 JSON body too)."""

    PIECE = 61

    def __init__(self) -> None:
        self.replies: list[tuple[int, str, bytes]] = []
        self.loopback = LoopbackUpstream(self._answer)

    def stream(self, body: bytes) -> ResponsesUpstream:
        self.replies.append((200, "text/event-stream", body))
        return self

    def json(self, body: bytes, status: int = 200) -> ResponsesUpstream:
        self.replies.append((status, "application/json", body))
        return self

    @property
    def received(self) -> list[Received]:
        return [Received(raw) for raw in self.loopback.requests]

    async def _answer(self, writer: asyncio.StreamWriter) -> None:
        status, content_type, body = self.replies.pop(0)
        head = b"HTTP/1.1 %d OK\r\ncontent-type: %b\r\ntransfer-encoding: chunked\r\nx-request-id: req_up\r\n\r\n" % (
            status,
            content_type.encode(),
        )
        pieces = (http_chunk(body[i : i + self.PIECE]) for i in range(0, len(body), self.PIECE))
        writer.write(head + b"".join(pieces) + b"0\r\n\r\n")
        await writer.drain()
