"""The ASGI app, built from settings by `create_app`: the dialects' routes, the page,
`/metrics`, the guards, and the lifespan that starts and stops what the app owns."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ParamSpec

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from . import keys, metrics, timing
from .adapter import Adapter
from .callers import load_callers
from .catalog import Catalog
from .config import ConfigFile, load_config
from .dialects import DIALECTS
from .errors import GatewayError, MethodNotAllowedError, NotFoundError
from .gateway import Gateway
from .http_guards import BearerAuth, ErrorShapes, OriginGuard, accepted_hosts
from .pipeline import ErrorSender, lighter_log_records, requests_ended_at_exit
from .providers import PROVIDERS, build_adapters
from .resume import Streams, store_for
from .route_path import route_path
from .routing import build_routes, load_routes
from .settings import Settings

P = ParamSpec("P")

log = logging.getLogger("streamgate")

STATIC_DIR = Path(__file__).resolve().parent / "static"


async def health(request: Request) -> JSONResponse:
    """Each provider: configured or not, its default model and the catalog's models; each
    route of the config file (when there are any): its strategy and targets."""
    catalog: Catalog = request.app.state.catalog
    providers = {
        name: {
            "configured": adapter.configured,
            "default_model": adapter.default_model,
            "models": list(catalog.models[name]),
        }
        for name, adapter in catalog.adapters.items()
    }
    routes = {
        name: {
            "strategy": "hedge" if route.hedge else "fallback",
            "targets": [target.label for target in route.targets],
        }
        for name, route in request.app.state.gateway.routes.items()
    }
    return JSONResponse({"status": "ok", "providers": providers, **({"routes": routes} if routes else {})})


#: The page's policy as HTTP headers: only its own files run, and no other site may frame
#: it (`frame-ancestors` is ignored in a `<meta>` tag; `X-Frame-Options` for older browsers).
PAGE_HEADERS = {
    "cache-control": "no-cache",
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


#: The same policy on every file under `/static` (`/static/index.html` is the page too).
STATIC_HEADERS = [(name.encode(), value.encode()) for name, value in PAGE_HEADERS.items() if name != "cache-control"]


class StaticWithHeaders:
    """`static/`'s files, each answer with `STATIC_HEADERS`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *STATIC_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def chat_page(request: Request) -> FileResponse:
    """`GET /`: the chat page (`static/`: plain HTML, CSS and JS, nothing fetched from outside)."""
    return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


class ErrorResponse(Response):
    """An error answered by a dialect's own sender (its shape, its status)."""

    def __init__(self, sender: ErrorSender, error: GatewayError) -> None:
        super().__init__()
        self.sender = sender
        self.error = error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.sender(send, self.error)


def no_such_endpoint(routes: list[BaseRoute], shapes: ErrorShapes) -> Callable[[Request, Exception], Response]:
    """The handler of Starlette's 404 and 405: under `/api/` and `/v1/`, an error in the
    path's dialect naming the path and the endpoints that exist; elsewhere plain text."""
    endpoints = sorted(
        {
            f"{method} {route.path}"
            for route in routes
            if isinstance(route, Route)
            for method in (route.methods or ())
            if method != "HEAD" and route.path.startswith(("/api/", "/v1/"))
        }
    )

    def handler(request: Request, exc: Exception) -> Response:
        path = route_path(request.scope)
        status = getattr(exc, "status_code", 404)
        if not path.startswith(("/api/", "/v1/")):
            return PlainTextResponse("Not Found" if status == 404 else "Method Not Allowed", status_code=status)
        prefix = "/v1/" if path.startswith("/v1/") else "/api/"
        served = ", ".join(endpoint for endpoint in endpoints if endpoint.partition(" ")[2].startswith(prefix))
        error: GatewayError
        if status == 405:
            error = MethodNotAllowedError(
                f"{request.method} is not served at {path[:200]!r}; this gateway serves: {served}"
            )
        else:
            error = NotFoundError(f"no endpoint at {path[:200]!r}; this gateway serves: {served}")
        return ErrorResponse(shapes.sender(path), error)

    return handler


def asgi3(method: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
    """`method`, which returns an awaitable, marked as a coroutine function: servers (uvicorn,
    with `interface="auto"`, its default) take an app whose `__call__` is not one for ASGI 2."""
    if sys.version_info >= (3, 12):
        return inspect.markcoroutinefunction(method)
    method._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]  # what 3.11 checks
    return method


class GatewayApp(Starlette):
    """Starlette, with a direct path for the chat endpoints: a `POST` to one of them goes
    to its own origin-guard → bearer-auth → endpoint chain, past Starlette's router and its
    error/exception middleware (which our endpoints never need: they answer their own
    errors): one send wrapper less per frame and less work per request (the figures are in
    docs/BENCHMARKS.md). Every other request takes the whole stack."""

    def __init__(self, *args: Any, direct: Mapping[str, ASGIApp], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.direct = direct

    @asgi3
    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:  # type: ignore[override]
        """The endpoint's (or Starlette's) awaitable, not a coroutine of its own: a request
        keeps no frame of this while it streams (the README's issue 26 section has the figures)."""
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.direct.get(route_path(scope))
            if endpoint is not None:
                scope["app"] = self
                return endpoint(scope, receive, send)
        return super().__call__(scope, receive, send)


def direct_chains(routes: list[BaseRoute], middleware: list[Middleware]) -> dict[str, ASGIApp]:
    """Per chat path (the POST routes whose app is a plain ASGI endpoint), the app's
    middleware wrapped around the endpoint alone, as Starlette would wrap the whole app."""
    direct: dict[str, ASGIApp] = {}
    for route in routes:
        if isinstance(route, Route) and route.methods == {"POST"} and route.app is route.endpoint:
            chain: ASGIApp = route.endpoint
            for cls, args, kwargs in reversed(middleware):
                if cls is OriginGuard:
                    kwargs = {**kwargs, "vary_without_origin": False}
                chain = cls(chain, *args, **kwargs)
            direct[route.path] = chain
    return direct


def create_app(
    settings: Settings | None = None,
    adapters: Mapping[str, Adapter] | None = None,
    *,
    catalog: Catalog | None = None,
    config: ConfigFile | None = None,
) -> Starlette:
    """The ASGI app. `adapters` defaults to one per provider, built from `settings`;
    `catalog` to one over them, refreshed while the app runs; `config` to the config file
    `settings.streamgate_config` names (else `./streamgate.toml` when it exists). A config file
    that does not check raises `SettingsError` (one line naming the file and line)
    before anything is built."""
    settings = settings or Settings.from_env()
    config = config if config is not None else load_config(settings.streamgate_config or "")
    route_specs = load_routes(config, adapters if adapters is not None else PROVIDERS)
    adapters = adapters if adapters is not None else build_adapters(settings)
    catalog = catalog or Catalog(adapters, refresh_s=settings.model_catalog_refresh_s or None)
    restorers = {name: restore for dialect in DIALECTS for name, restore in dialect.RESTORERS.items()}
    streams = Streams(settings, store_for(settings), restorers)
    gateway = Gateway(settings, adapters, catalog, streams, build_routes(route_specs, adapters))
    tracer = timing.install_tracing()  # None unless OTEL_* variables configure an exporter
    callers = load_callers(config, settings.gateway_api_key, settings.redis_url)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.info("accepting %s", accepted_hosts(settings.allowed_hosts))
        catalog.start()
        await streams.start()
        if callers is not None:
            await callers.meter.start()
        lighter_log_records()
        if not gc.get_freeze_count():  # once per process: what start-up made is kept for good,
            gc.freeze()  # so the full collections under load no longer rescan every SDK's modules
        stalls = metrics.Stalls()  # the event-loop lag and GC pauses in /metrics
        async with requests_ended_at_exit():
            yield
        stalls.stop()
        await streams.aclose()
        if callers is not None:
            await callers.meter.aclose()
        await catalog.stop()
        for adapter in adapters.values():
            await adapter.aclose()
        await keys.aclose_all()  # the shared key rests' Redis clients (REDIS_URL with several keys)
        if tracer is not None:
            await asyncio.to_thread(tracer.flush)
        for handler in logging.getLogger().handlers:  # lines a handler holds back (the server's batches)
            handler.flush()

    routes: list[BaseRoute] = [Route("/api/v1/chat/stream/health", health, methods=["GET"])]
    routes += [route for dialect in DIALECTS for route in dialect.routes(gateway)]
    routes += [
        Route("/", chat_page, methods=["GET"]),
        Mount("/static", StaticWithHeaders(StaticFiles(directory=STATIC_DIR)), name="static"),
        Route("/metrics", metrics.scrape, methods=["GET"]),
    ]
    direct_paths = frozenset(route.path for route in routes if isinstance(route, Route) and route.methods == {"POST"})
    senders = {prefix: sender for dialect in DIALECTS for prefix, sender in dialect.ERROR_SENDERS.items()}
    shapes = ErrorShapes(senders, log_refusals=settings.access_log)
    middleware = [
        Middleware(
            OriginGuard, settings.allowed_hosts, settings.cors_origins, error_shapes=shapes, chat_paths=direct_paths
        ),
        Middleware(
            BearerAuth,
            settings.gateway_api_key,
            callers=callers,
            metrics_public=settings.metrics_public,
            error_shapes=shapes,
            chat_paths=direct_paths,
        ),
    ]
    not_found = no_such_endpoint(routes, shapes)
    app = GatewayApp(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        direct=direct_chains(routes, middleware),
        exception_handlers={404: not_found, 405: not_found},
    )
    app.state.settings = settings
    app.state.adapters = adapters
    app.state.catalog = catalog
    app.state.streams = streams
    app.state.gateway = gateway
    app.state.callers = callers
    metrics.declare(adapters)
    return app
