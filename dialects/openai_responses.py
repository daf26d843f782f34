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

The request's reading is `responses_input`, the events' writing `responses_events`; this
module runs a request (`ResponsesDialect`, `Exchange`) and serves the stored responses
(`StoredEndpoint`).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable
from typing import Any

import msgspec
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from ..adapter import ChunkStream
from ..chat_types import (
    ChatRequest,
    StreamChunk,
    Usage,
    json_encoder,
)
from ..errors import GatewayError, InvalidRequestError
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
from .responses_events import ResponsesFrames, answer_items, status_of, usage_object, visible
from .responses_input import (
    EFFORTS,
    ENCRYPTED_CONTENT,
    UPSTREAM_ID,
    ResponseNotFoundError,
    ResponsesRequest,
    ToolPlan,
    input_items,
    is_reference,
    not_found,
    plan_tools,
    response_format_of,
    responses_request_decoder,
    to_messages,
)

# --- one request ----------------------------------------------------------------------

#: Client headers never forwarded to the upstream by a passthrough.
_NOT_FORWARDED = frozenset(
    {
        b"authorization",
        b"x-api-key",
        b"host",
        b"content-length",
        b"content-type",
        b"connection",
        b"transfer-encoding",
        b"accept-encoding",
        b"cookie",
        b"origin",
        b"user-agent",
        b"accept",
        b"keep-alive",
        b"upgrade",
        b"te",
        b"trailer",
    }
)


def forwarded_headers(scope: Scope) -> list[tuple[str, str]]:
    return [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in scope["headers"]
        if name not in _NOT_FORWARDED and not name.startswith(b"x-stainless")
    ]


def with_model(body: bytes, model: str) -> bytes:
    """`body` with `model` replaced (a route or a `openai/` prefix names another)."""
    fields = msgspec.json.decode(body)
    fields["model"] = model
    return json_encoder.encode(fields)


async def open_passthrough(
    target: Target,
    body: bytes,
    headers: list[tuple[str, str]],
    *,
    stream: bool,
    path: str = "/responses",
    method: str = "POST",
) -> ChunkStream:
    # imported on use: it is built with the openai adapter
    from ..providers.openai_responses import open_responses_passthrough

    adapter: Any = target.adapter  # the openai adapter: the only target a passthrough is opened on
    return await open_responses_passthrough(adapter, body, headers, stream=stream, path=path, method=method)


class Exchange:
    """One translated request: its items (resolved against the store), its frames, and its
    storing at the end."""

    def __init__(
        self,
        request: ResponsesRequest,
        store: ResponseStore,
        frames: ResponsesFrames,
        plan: ToolPlan | None,
        keep: bool,
    ) -> None:
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
        wanted = [
            item["id"]
            for item in new
            if isinstance(item.get("id"), str)
            and (is_reference(item) or (item.get("type") == "reasoning" and not item.get("encrypted_content")))
        ]
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
            messages=to_messages(request.instructions, self.items, self.plan.names),
            provider=provider,
            model=model,
            temperature=request.temperature,
            top_p=request.top_p,
            max_tokens=request.max_output_tokens,
            reasoning_effort=EFFORTS[effort] if effort is not None else None,
            include_reasoning=summary not in (None, "none"),
            response_format=response_format_of(request.text),
            tools=self.plan.tools,
            tool_choice=self.plan.tool_choice,
            resumable=bool(request.background),
        )
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
                raise ResponseNotFoundError(
                    f"$.input[{index}].id: no stored item with id {str(item.get('id'))[:100]!r}"
                )
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
        response = frames.response(
            status,
            incomplete_details=incomplete,
            completed_at=int(time.time()),
            output=[visible(item, frames.show_signature) for item in items],
            usage=usage_object(final.usage),
        )
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
        frames = ResponsesFrames(
            self.base(request, keep), ENCRYPTED_CONTENT in include, plan.names if plan is not None else {}, background
        )
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

        return Call(
            provider=first.adapter.name,
            model=first.model,
            open=self.gateway.opener(targets, open_target),
            frames=frames,
            streaming=streaming,
            resumable=background,
            send_answer=exchange.send_answer,
            requested_model=request.model,
        )

    @staticmethod
    def base(request: ResponsesRequest, keep: bool) -> dict[str, Any]:
        """The response object's fields that echo the request."""
        reasoning = request.reasoning
        text_format = request.text.format if request.text is not None and request.text.format else {"type": "text"}
        return {
            "id": f"resp_{secrets.token_hex(24)}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "in_progress",
            "background": bool(request.background),
            "error": None,
            "incomplete_details": None,
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "model": request.model,
            "output": [],
            "parallel_tool_calls": request.parallel_tool_calls is not False,
            "previous_response_id": request.previous_response_id,
            "reasoning": {"effort": reasoning.effort, "summary": reasoning.summary}
            if reasoning is not None
            else {"effort": None, "summary": None},
            "store": keep,
            "temperature": request.temperature,
            "text": {"format": text_format},
            "tool_choice": request.tool_choice or "auto",
            "tools": request.tools or [],
            "top_p": request.top_p,
            "truncation": request.truncation or "disabled",
            "usage": None,
            "user": request.user,
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
            return open_passthrough(
                target,
                b"",
                headers,
                stream=streaming,
                method=method,
                path=path + (f"?{query_string}" if query_string else ""),
            )

        async def send_raw(send_: Send, answer: CollectedAnswer) -> None:
            await send_json(send_, 200, answer.raw)

        call = Call(
            provider="openai", model="-", open=open_upstream, frames=frames, streaming=streaming, send_answer=send_raw
        )
        await run_chat(call, receive, send, self.gateway.settings.sse_heartbeat_s, send_error=send_responses_error)

    async def replay(
        self, scope: Scope, receive: Receive, send: Send, response_id: str, starting_after: str | None
    ) -> None:
        """A background response's events after `starting_after`, then live to its end."""
        if starting_after is not None and not (starting_after.isdigit() and len(starting_after) < 18):
            raise InvalidRequestError("starting_after: must be a sequence number, a non-negative integer")
        streams = self.gateway.streams
        try:
            reader = await streams.store.open(response_id)
        except GatewayError:
            raise InvalidRequestError(
                f"response '{response_id[:100]}' was not created with background: true and "
                "stream: true (or its events expired, RESUME_TTL_S); only such a response "
                "streams again"
            ) from None
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
            raise InvalidRequestError(
                f"response '{response_id[:100]}' was not created with background: true; "
                "only a background response can be cancelled"
            )
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

    body = {
        "error": {
            "message": "this gateway serves /v1/responses over HTTP only; POST it",
            "type": "invalid_request_error",
            "param": None,
            "code": "websocket_not_supported",
        }
    }
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
