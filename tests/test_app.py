"""app: `GatewayApp` hands a chat request's awaitable on without a coroutine of its own,
and servers still take it for an ASGI 3 app."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from streamgate.app import GatewayApp, create_app
from support import settings


async def endpoint(scope: dict[str, Any], receive: Any, send: Any) -> None:
    pass


def test_a_direct_chat_request_is_the_endpoint_s_own_awaitable() -> None:
    """No `GatewayApp` coroutine stays suspended above the endpoint while it streams."""
    app = GatewayApp(direct={"/api/v1/chat/stream": endpoint})
    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/api/v1/chat/stream", "root_path": ""}
    awaitable = app(scope, None, None)  # type: ignore[arg-type]
    assert awaitable.cr_code is endpoint.__code__  # type: ignore[attr-defined]
    asyncio.run(awaitable)  # type: ignore[arg-type]
    assert scope["app"] is app


def test_uvicorn_takes_the_app_for_asgi_3() -> None:
    """uvicorn tells ASGI 3 from ASGI 2 by `__call__` being a coroutine function: ours
    returns an awaitable and is marked as one (`asgi3`), or every request would fail."""
    config = uvicorn.Config(create_app(settings()))  # interface="auto", uvicorn's default
    config.load()
    assert config.interface == "asgi3"
