"""The native dialect: `POST /api/v1/chat/stream` (SSE) and `POST /api/v1/chat` (one
JSON answer), with the resume routes of its streams.

Its request is our own `ChatRequest`; its frames are `id`, `event: message` and the
StreamChunk JSON (`event: reasoning`, `event: tool_call`, `event: error` beside them).
"""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute, Route
from starlette.types import Scope, Send

from .. import sse
from ..chat_types import (
    ChatRequest,
    ChatResponse,
    ChatResponseWithReasoning,
    FinishReason,
    RawEvent,
    ReasoningChunk,
    SignatureChunk,
    StreamChunk,
    ToolCallChunk,
    Usage,
    chat_request_decoder,
    json_encoder,
)
from ..errors import GatewayError, InvalidRequestError
from ..gateway import Gateway, translated
from ..pipeline import AnswerSender, Call, ChatEndpoint, CollectedAnswer, decode_json, send_error, send_json
from ..request_checks import check_request
from ..resume import CancelEndpoint, ResumeEndpoint

#: The one encoder's `encode`, bound once (no attribute lookups per frame).
_encode = json_encoder.encode


class NativeFrames:
    """The `/api/v1/chat/stream` dialect: `id`, `event: message`, StreamChunk JSON."""

    __slots__ = ("last_id", "model", "provider", "final_sent")

    def __init__(self, model: str, provider: str) -> None:
        self.last_id = 0
        self.model = model
        self.provider = provider
        self.final_sent = False

    def content(self, chunk: StreamChunk) -> bytes:
        """`sse.message_frame` of the chunk, written here (one call fewer per frame)."""
        self.last_id += 1
        return b"id: %d\nevent: message\ndata: %b\n\n" % (self.last_id, _encode(chunk))

    def final(self, chunk: StreamChunk) -> bytes:
        self.final_sent = True
        return self.content(chunk)

    def reasoning(self, chunk: ReasoningChunk) -> bytes:
        self.last_id += 1
        return sse.event_frame(self.last_id, b"reasoning", json_encoder.encode(chunk))

    def tool_call(self, chunk: ToolCallChunk) -> bytes:
        """`sse.event_frame` of the chunk as a `tool_call`, written here (as `content`)."""
        self.last_id += 1
        return b"id: %d\nevent: tool_call\ndata: %b\n\n" % (self.last_id, _encode(chunk))

    def signature(self, chunk: SignatureChunk) -> bytes:
        return b""  # the dialect has no place for it

    def raw(self, chunk: RawEvent) -> bytes:
        return chunk.data

    def failure(self, error: GatewayError, final_sent: bool, usage: Usage | None) -> bytes:
        """The final `error` frame (unless one was sent), then the `event: error` frame."""
        frames = b""
        if not final_sent:
            frames = self.content(StreamChunk("", FinishReason.ERROR, self.model, self.provider, usage))
        self.last_id += 1
        return frames + sse.event_frame(self.last_id, b"error", json_encoder.encode(error.body())) + sse.DONE

    def done(self) -> bytes:
        return sse.DONE

    def serve(self, provider: str, model: str) -> None:
        """A route's target serves the call: the error end names it."""
        self.provider, self.model = provider, model

    def meta(self) -> dict[str, Any]:
        """What `restore` needs to write this stream's error end again (`resume.py`)."""
        return {"dialect": "native", "model": self.model, "provider": self.provider}

    @classmethod
    def restore(cls, meta: dict[str, Any]) -> NativeFrames:
        return cls(meta["model"], meta["provider"])


async def send_answer(send: Send, answer: CollectedAnswer, *, with_reasoning: bool = False) -> None:
    """The whole answer of `POST /api/v1/chat`; `with_reasoning`: its `reasoning` too."""
    final = answer.final
    fields: dict[str, Any] = dict(
        content=answer.content,
        finish_reason=final.finish_reason or FinishReason.STOP,
        model=final.model,
        provider=final.provider,
        usage=final.usage,
        tool_calls=answer.tool_calls,
    )
    body = ChatResponseWithReasoning(**fields, reasoning=answer.reasoning) if with_reasoning else ChatResponse(**fields)
    await send_json(send, 200, json_encoder.encode(body))


async def send_answer_with_reasoning(send: Send, answer: CollectedAnswer) -> None:
    await send_answer(send, answer, with_reasoning=True)


class NativeDialect:
    """Our own request shape; `streaming` for `/api/v1/chat/stream`, else `/api/v1/chat`."""

    def __init__(self, gateway: Gateway, *, streaming: bool) -> None:
        self.gateway = gateway
        self.streaming = streaming

    def prepare(self, body: bytes, scope: Scope) -> Call:
        request: ChatRequest = decode_json(body, chat_request_decoder)
        check_request(request)
        answer = send_answer_with_reasoning if request.include_reasoning else send_answer
        if not request.provider:
            return self.routed(request, answer)
        adapter = self.gateway.adapter(request.provider)
        model = request.model or adapter.default_model
        return Call(
            provider=adapter.name,
            model=model,
            open=lambda: adapter.stream_chat(request),
            frames=NativeFrames(model, adapter.name),
            streaming=self.streaming,
            resumable=request.resumable,
            send_answer=answer,
        )

    def routed(self, request: ChatRequest, answer: AnswerSender) -> Call:
        """A request with `provider` left out: `model` must name a route."""
        routes = self.gateway.routes
        if request.model is None or request.model not in routes:
            named = f"; or name a route as model: {', '.join(routes)}" if routes else ""
            raise InvalidRequestError(f"$.provider: required field is missing{named}")
        targets = self.gateway.targets(request.model, "")
        first = targets[0]

        return Call(
            provider=first.adapter.name,
            model=first.model,
            open=self.gateway.opener(targets, translated(request)),
            frames=NativeFrames(first.model, first.adapter.name),
            streaming=self.streaming,
            resumable=request.resumable,
            send_answer=answer,
        )

    send_error = staticmethod(send_error)

    @staticmethod
    def error_status(error: GatewayError) -> int:
        return error.status


def routes(gateway: Gateway) -> list[BaseRoute]:
    settings, streams = gateway.settings, gateway.streams
    return [
        Route(
            "/api/v1/chat/stream",
            ChatEndpoint(NativeDialect(gateway, streaming=True), settings, streams),
            methods=["POST"],
        ),
        Route("/api/v1/chat", ChatEndpoint(NativeDialect(gateway, streaming=False), settings), methods=["POST"]),
        Route("/api/v1/chat/stream/{stream_id}", ResumeEndpoint(streams, send_error), methods=["GET"]),
        Route("/api/v1/chat/stream/{stream_id}", CancelEndpoint(streams, send_error), methods=["DELETE"]),
    ]


RESTORERS = {"native": NativeFrames.restore}
ERROR_SENDERS = {"/api/": send_error}
