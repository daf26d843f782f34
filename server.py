"""streamgate's HTTP app: one chat request in, one unified SSE stream out.

A request reads top to bottom through `ChatEndpoint.__call__`: decode (`read_body`,
`decode_json`) → pick adapter (`pick_adapter`) → open upstream (`adapter.stream_chat`) →
frame (`NativeFrames`) → send (`pipeline.stream_chunks`). The steps shared with the
OpenAI-compatible dialect (`openai_compat.py`) live in `pipeline.py`.

Run it with `python server.py` (uvloop, httptools, graceful SIGTERM) or `uvicorn server:app`.
"""

from __future__ import annotations

import gc
import logging
import signal
import socket
import sys
from collections.abc import Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.lifespan.on import LifespanOn

from streamgate import metrics
from streamgate.catalog import Catalog
from streamgate import sse
from streamgate import workers
from streamgate.http_guards import BearerAuth, OriginGuard, route_path
from streamgate.openai_compat import NumberedOpenAIFrames, openai_routes, send_openai_error
from streamgate.pipeline import (
    ClientGone,
    CollectedAnswer,
    decode_json,
    log_request,
    pick_adapter,
    read_body,
    requests_ended_at_exit,
    run_chat,
    send_error,
    send_json,
)
from streamgate.providers import build_adapters
from streamgate.request_checks import check_request
from streamgate.resume import Streams, resume_routes, store_for
from streamgate.providers.base import Adapter
from streamgate.errors import GatewayError
from streamgate.settings import Settings, SettingsError
from streamgate.chat_types import (
    ChatRequest,
    ChatResponse,
    ChatResponseWithReasoning,
    FinishReason,
    ReasoningChunk,
    StreamChunk,
    ToolCallChunk,
    Usage,
    chat_request_decoder,
    json_encoder,
)

# --- frame ----------------------------------------------------------------------------


class NativeFrames:
    """The `/api/v1/chat/stream` dialect: `id`, `event: message`, StreamChunk JSON."""

    __slots__ = ("last_id", "model", "provider")

    def __init__(self, model: str, provider: str) -> None:
        self.last_id = 0
        self.model = model
        self.provider = provider

    def content(self, chunk: StreamChunk) -> bytes:
        self.last_id += 1
        return sse.message_frame(self.last_id, json_encoder.encode(chunk))

    final = content

    def reasoning(self, chunk: ReasoningChunk) -> bytes:
        self.last_id += 1
        return sse.event_frame(self.last_id, b"reasoning", json_encoder.encode(chunk))

    def tool_call(self, chunk: ToolCallChunk) -> bytes:
        self.last_id += 1
        return sse.event_frame(self.last_id, b"tool_call", json_encoder.encode(chunk))

    def failure(self, error: GatewayError, final_sent: bool, usage: Usage | None) -> bytes:
        """The final `error` frame (unless one was sent), then the `event: error` frame."""
        frames = b""
        if not final_sent:
            frames = self.content(StreamChunk("", FinishReason.ERROR, self.model, self.provider, usage))
        self.last_id += 1
        return frames + sse.event_frame(self.last_id, b"error", json_encoder.encode(error.body())) + sse.DONE

    def done(self) -> bytes:
        return sse.DONE


class ResumableNativeFrames(NativeFrames):
    """`NativeFrames` of a resumable stream (`resume.ResumableFrames`): they note the final
    frame and describe themselves, so a reader can write the stream's error end."""

    __slots__ = ("final_sent",)

    def __init__(self, model: str, provider: str) -> None:
        super().__init__(model, provider)
        self.final_sent = False

    def final(self, chunk: StreamChunk) -> bytes:
        self.final_sent = True
        return self.content(chunk)

    def meta(self) -> dict[str, Any]:
        return {"dialect": "native", "model": self.model, "provider": self.provider}

    @classmethod
    def restore(cls, meta: dict[str, Any]) -> ResumableNativeFrames:
        return cls(meta["model"], meta["provider"])


# --- the endpoints --------------------------------------------------------------------


class ChatEndpoint:
    """`POST /api/v1/chat/stream` (`streaming`) or `POST /api/v1/chat`, as a plain ASGI app."""

    def __init__(self, settings: Settings, adapters: Mapping[str, Adapter], *, streaming: bool,
                 streams: Streams | None = None) -> None:
        self.settings = settings
        self.adapters = adapters
        self.streaming = streaming
        self.streams = streams

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await read_body(scope, receive, self.settings.max_body_bytes)
            request: ChatRequest = decode_json(body, chat_request_decoder)
            check_request(request)
            adapter = pick_adapter(self.adapters, request.provider)
        except ClientGone:
            return
        except GatewayError as error:
            metrics.record_rejected(error.type, error.provider)
            await send_error(send, error)
            if self.settings.access_log:
                log_request(scope, error.status, error.provider, None, error_type=error.type)
            return
        model = request.model or adapter.default_model
        frames = (ResumableNativeFrames if request.resumable else NativeFrames)(model, adapter.name)
        await run_chat(
            adapter, request, frames, receive, send,
            self.settings.sse_heartbeat_s, streaming=self.streaming,
            send_error=send_error, streams=self.streams,
            send_answer=send_native_answer_with_reasoning if request.include_reasoning else send_native_answer,
            scope=scope if self.settings.access_log else None,
        )


async def send_native_answer(send: Send, answer: CollectedAnswer, include_reasoning: bool = False) -> None:
    final = answer.final
    fields = (answer.content, final.finish_reason or FinishReason.STOP, final.model, final.provider, final.usage,
              answer.tool_calls)
    body = ChatResponseWithReasoning(*fields, answer.reasoning) if include_reasoning else ChatResponse(*fields)
    await send_json(send, 200, json_encoder.encode(body))


async def send_native_answer_with_reasoning(send: Send, answer: CollectedAnswer) -> None:
    await send_native_answer(send, answer, include_reasoning=True)


async def health(request: Request) -> JSONResponse:
    """Each provider: configured or not, its default model and the catalog's models."""
    catalog: Catalog = request.app.state.catalog
    providers = {
        name: {"configured": adapter.configured, "default_model": adapter.default_model,
               "models": list(catalog.models[name])}
        for name, adapter in catalog.adapters.items()
    }
    return JSONResponse({"status": "ok", "providers": providers})


STATIC_DIR = Path(__file__).resolve().parent / "static"


async def chat_page(request: Request) -> FileResponse:
    """`GET /`: the chat page (`static/`: plain HTML, CSS and JS, nothing fetched from outside)."""
    return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})


# --- the app --------------------------------------------------------------------------


class GatewayApp(Starlette):
    """Starlette, with a direct path for the chat endpoints: a `POST` to one of them goes
    to its own origin-guard → bearer-auth → endpoint chain, past Starlette's router and its
    error/exception middleware (which our endpoints never need: they answer their own
    errors). That is ~15% of a short request's CPU and one send wrapper less per frame,
    measured with `python -m bench`. Every other request takes the whole stack."""

    def __init__(self, *args: Any, direct: Mapping[str, ASGIApp], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.direct = direct

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.direct.get(route_path(scope))
            if endpoint is not None:
                scope["app"] = self
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, adapters: Mapping[str, Adapter] | None = None, *,
               catalog: Catalog | None = None) -> Starlette:
    """The ASGI app. `adapters` defaults to one per provider, built from `settings`;
    `catalog` to one over them, refreshed while the app runs."""
    settings = settings or Settings.from_env()
    adapters = adapters if adapters is not None else build_adapters(settings)
    catalog = catalog or Catalog(adapters, refresh_s=settings.model_catalog_refresh_s or None)
    streams = Streams(settings, store_for(settings),
                      {"native": ResumableNativeFrames.restore, "openai": NumberedOpenAIFrames.restore})

    @asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        catalog.start()
        await streams.start()
        if not gc.get_freeze_count():  # once per process: what start-up made is kept for good,
            gc.freeze()  # so the full collections under load no longer rescan every SDK's modules
        async with requests_ended_at_exit():
            yield
        await streams.aclose()
        await catalog.stop()
        for adapter in adapters.values():
            await adapter.aclose()

    routes = [
        Route("/api/v1/chat/stream", ChatEndpoint(settings, adapters, streaming=True, streams=streams),
              methods=["POST"]),
        Route("/api/v1/chat", ChatEndpoint(settings, adapters, streaming=False), methods=["POST"]),
        Route("/api/v1/chat/stream/health", health, methods=["GET"]),
        *resume_routes(streams, send_error, send_openai_error),
        *openai_routes(settings, adapters, catalog, streams),
        Route("/", chat_page, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        Route("/metrics", metrics.scrape, methods=["GET"]),
    ]
    # The chat endpoints: the POST routes, each a plain ASGI endpoint (not a request function).
    chat_routes = [route for route in routes
                   if isinstance(route, Route) and route.methods == {"POST"} and route.app is route.endpoint]
    shared = {"send_v1_error": send_openai_error, "chat_paths": frozenset(route.path for route in chat_routes)}
    middleware = [
        Middleware(OriginGuard, settings.allowed_hosts, settings.cors_origins, **shared),
        Middleware(BearerAuth, settings.gateway_api_key, **shared),
    ]
    direct: dict[str, ASGIApp] = {}
    for route in chat_routes:
        chain: ASGIApp = route.endpoint
        for cls, args, kwargs in reversed(middleware):
            chain = cls(chain, *args, **({**kwargs, "vary_without_origin": False} if cls is OriginGuard else kwargs))
        direct[route.path] = chain
    app = GatewayApp(routes=routes, middleware=middleware, lifespan=lifespan, direct=direct)
    app.state.settings = settings
    app.state.adapters = adapters
    app.state.catalog = catalog
    app.state.streams = streams
    metrics.declare(adapters)
    return app


def app_from_env() -> Starlette:
    """`create_app()` with the environment's settings; a bad value ends the process with
    one line naming the variable and status 2 (for `python server.py`, the `streamgate`
    command and `uvicorn streamgate.server:app` alike: each imports this module)."""
    try:
        return create_app()
    except SettingsError as error:
        print(f"streamgate: cannot start: {error}", file=sys.stderr)
        raise SystemExit(2) from None


app = app_from_env()


class GatewayServer(uvicorn.Server):
    """uvicorn's server, where the second SIGTERM forces the exit as a second Ctrl-C does,
    and a forced exit still runs the app's shutdown (uvicorn skips it): the streams still
    open get their failure end at once instead of a cut connection."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGTERM:
            self.force_exit = True
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        lifespan = self.lifespan
        if self.force_exit and isinstance(lifespan, LifespanOn) and not lifespan.shutdown_event.is_set():
            await lifespan.shutdown()


def main() -> None:
    settings: Settings = app.state.settings
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # it logs every upstream request at INFO
    options: dict[str, Any] = dict(
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,  # the request log is ours (`ACCESS_LOG`), with what uvicorn cannot know
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )
    if settings.workers > 1:
        workers.run_workers(settings, **options)
        return
    try:
        GatewayServer(uvicorn.Config(app, **options)).run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled, once it is done
        pass

if __name__ == "__main__":
    main()
