"""The ASGI app, built from settings by `create_app`: the dialects' routes, the page,
`/metrics`, the guards, and the lifespan that starts and stops what the app owns."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from . import metrics, timing
from .adapter import Adapter
from .catalog import Catalog
from .dialects import DIALECTS
from .gateway import Gateway
from .http_guards import BearerAuth, ErrorShapes, OriginGuard, route_path
from .pipeline import requests_ended_at_exit
from .providers import build_adapters
from .resume import Streams, store_for
from .settings import Settings

STATIC_DIR = Path(__file__).resolve().parent / "static"


async def health(request: Request) -> JSONResponse:
    """Each provider: configured or not, its default model and the catalog's models."""
    catalog: Catalog = request.app.state.catalog
    providers = {
        name: {"configured": adapter.configured, "default_model": adapter.default_model,
               "models": list(catalog.models[name])}
        for name, adapter in catalog.adapters.items()
    }
    return JSONResponse({"status": "ok", "providers": providers})


async def chat_page(request: Request) -> FileResponse:
    """`GET /`: the chat page (`static/`: plain HTML, CSS and JS, nothing fetched from outside)."""
    return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})


class GatewayApp(Starlette):
    """Starlette, with a direct path for the chat endpoints: a `POST` to one of them goes
    to its own origin-guard → bearer-auth → endpoint chain, past Starlette's router and its
    error/exception middleware (which our endpoints never need: they answer their own
    errors): one send wrapper less per frame and less work per request (the figures are in
    docs/BENCHMARKS.md). Every other request takes the whole stack."""

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


def create_app(settings: Settings | None = None, adapters: Mapping[str, Adapter] | None = None, *,
               catalog: Catalog | None = None) -> Starlette:
    """The ASGI app. `adapters` defaults to one per provider, built from `settings`;
    `catalog` to one over them, refreshed while the app runs."""
    settings = settings or Settings.from_env()
    adapters = adapters if adapters is not None else build_adapters(settings)
    catalog = catalog or Catalog(adapters, refresh_s=settings.model_catalog_refresh_s or None)
    restorers = {name: restore for dialect in DIALECTS for name, restore in dialect.RESTORERS.items()}
    streams = Streams(settings, store_for(settings), restorers)
    gateway = Gateway(settings, adapters, catalog, streams)
    tracer = timing.install_tracing()  # None unless OTEL_* variables configure an exporter

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
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
        if tracer is not None:
            await asyncio.to_thread(tracer.flush)

    routes: list[BaseRoute] = [Route("/api/v1/chat/stream/health", health, methods=["GET"])]
    routes += [route for dialect in DIALECTS for route in dialect.routes(gateway)]
    routes += [
        Route("/", chat_page, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        Route("/metrics", metrics.scrape, methods=["GET"]),
    ]
    direct_paths = frozenset(route.path for route in routes if isinstance(route, Route) and route.methods == {"POST"})
    senders = {prefix: sender for dialect in DIALECTS for prefix, sender in dialect.ERROR_SENDERS.items()}
    shared = {"error_shapes": ErrorShapes(senders), "chat_paths": direct_paths}
    middleware = [
        Middleware(OriginGuard, settings.allowed_hosts, settings.cors_origins, **shared),
        Middleware(BearerAuth, settings.gateway_api_key, **shared),
    ]
    app = GatewayApp(routes=routes, middleware=middleware, lifespan=lifespan,
                     direct=direct_chains(routes, middleware))
    app.state.settings = settings
    app.state.adapters = adapters
    app.state.catalog = catalog
    app.state.streams = streams
    app.state.gateway = gateway
    metrics.declare(adapters)
    return app
