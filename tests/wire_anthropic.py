"""Anthropic Messages API streaming wire bytes for tests, and the official SDK reading them.

Each builder returns the bytes of one named SSE event (`event: <name>` + `data: <json>`)
exactly as the Messages API streams them; `whole_stream` joins blocks into a whole
message (`message_start` … `message_delta` with the stop reason and usage, `message_stop`).
`sdk_message` proves a scripted stream is Anthropic's wire: every event validates against
the SDK's stream event types and `messages.stream` accumulates it into a `Message`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anthropic
import httpx2
import pydantic
from anthropic.types import Message, RawMessageStreamEvent
from streamgate import sse

MODEL = "claude-sonnet-5-5"
SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"


def event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def message_start(input_tokens: int = 25, model: str = MODEL, **cache: int) -> bytes:
    usage = {"input_tokens": input_tokens, "output_tokens": 1, **cache}
    return event(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": model,
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage,
            },
        },
    )


def text_delta(text: str, index: int = 0) -> bytes:
    return event(
        "content_block_delta",
        {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}},
    )


def message_delta(stop_reason: str = "end_turn", output_tokens: int = 15) -> bytes:
    return event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
    )


BLOCK_START = event(
    "content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
)
PING = event("ping", {"type": "ping"})
BLOCK_STOP = event("content_block_stop", {"type": "content_block_stop", "index": 0})
MESSAGE_STOP = event("message_stop", {"type": "message_stop"})


def block_start(index: int, block: dict[str, Any]) -> bytes:
    return event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


def block_delta(index: int, delta: dict[str, Any]) -> bytes:
    return event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def block_stop(index: int) -> bytes:
    return event("content_block_stop", {"type": "content_block_stop", "index": index})


def thinking_block(index: int, pieces: list[str]) -> list[bytes]:
    return [
        block_start(index, {"type": "thinking", "thinking": "", "signature": ""}),
        *(block_delta(index, {"type": "thinking_delta", "thinking": p}) for p in pieces),
        block_delta(index, {"type": "signature_delta", "signature": SIGNATURE}),
        block_stop(index),
    ]


def redacted_thinking_block(index: int) -> list[bytes]:
    return [
        block_start(index, {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIw"}),
        block_stop(index),
    ]


def text_block(index: int, pieces: list[str]) -> list[bytes]:
    return [
        block_start(index, {"type": "text", "text": ""}),
        *(text_delta(p, index) for p in pieces),
        block_stop(index),
    ]


def tool_block(index: int, call_id: str, name: str, fragments: list[str]) -> list[bytes]:
    """A `tool_use` block as the API streams it: `input: {}` at the start, then its JSON
    in `input_json_delta` fragments (the first is often empty)."""
    return [
        block_start(index, {"type": "tool_use", "id": call_id, "name": name, "input": {}}),
        *(block_delta(index, {"type": "input_json_delta", "partial_json": f}) for f in fragments),
        block_stop(index),
    ]


def whole_stream(
    *blocks: list[bytes],
    stop_reason: str = "end_turn",
    output_tokens: int = 90,
    thinking_tokens: int | None = None,
    model: str = MODEL,
) -> list[bytes]:
    usage: dict[str, Any] = {"output_tokens": output_tokens}
    if thinking_tokens is not None:
        usage["output_tokens_details"] = {"thinking_tokens": thinking_tokens}
    end = event(
        "message_delta",
        {"type": "message_delta", "usage": usage, "delta": {"stop_reason": stop_reason, "stop_sequence": None}},
    )
    return [message_start(model=model), *(read for block in blocks for read in block), end, MESSAGE_STOP]


_events = pydantic.TypeAdapter(RawMessageStreamEvent)


def sdk_message(reads: list[bytes]) -> Message:
    """The official SDK reading the same bytes: every event validated against its stream
    event types, then `messages.stream` accumulating them into the final `Message`."""
    body = b"".join(reads)
    for item in sse.Decoder().feed(body):
        if isinstance(item, sse.Event) and item.event != "ping":
            _events.validate_json(item.data)

    async def accumulate() -> Message:
        transport = httpx2.MockTransport(
            lambda _: httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)
        )
        http_client = httpx2.AsyncClient(transport=transport)
        async with anthropic.AsyncAnthropic(api_key="sk-ant-proof", http_client=http_client, max_retries=0) as client:
            async with client.messages.stream(
                model=MODEL, max_tokens=1024, messages=[{"role": "user", "content": "Hi"}]
            ) as stream:
                return await stream.get_final_message()

    return asyncio.run(accumulate())


def whole_message(
    content: list[dict[str, Any]], stop_reason: str = "end_turn", model: str = MODEL, **usage: int
) -> bytes:
    """A `stream: false` answer: one `message` object, as the Messages API returns it."""
    counts = {
        "input_tokens": 25,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 15,
        **usage,
    }
    return json.dumps(
        {
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "type": "message",
            "role": "assistant",
            "content": content,
            "model": model,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": counts,
        }
    ).encode()


def error_body(kind: str, message: str) -> bytes:
    """An error status's body, as the Messages API sends it."""
    return json.dumps(
        {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}
    ).encode()


def error_event(kind: str, message: str) -> bytes:
    """A mid-stream `event: error`, as the Messages API sends it."""
    return event("error", {"type": "error", "error": {"type": kind, "message": message}})
