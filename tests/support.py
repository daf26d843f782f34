"""Test helpers: a real loopback HTTP server running any ASGI app, test settings, and
what a client received from it."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx2
import uvicorn
from streamgate import sse
from streamgate.adapter import Adapter, ChunkStream, open_with_retries
from streamgate.chat_types import ChatRequest, StreamChunk
from streamgate.errors import UpstreamError, error_from_status
from streamgate.http_protocol import HttpProtocol
from streamgate.settings import Settings


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (for an unreachable upstream)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # type: ignore[no-any-return]


@contextmanager
def serve(app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Run `app` under uvicorn (its httptools protocol, as server.py does: `HttpProtocol`)
    on 127.0.0.1 in a thread; yield its base URL."""
    with served(app) as (url, _):
        yield url


@contextmanager
def served(app, loop: str = "asyncio") -> Iterator[tuple[str, uvicorn.Server]]:  # type: ignore[no-untyped-def]
    """`serve`, yielding the uvicorn server too (its connections are in `server_state`)."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=HttpProtocol,
        loop=loop,
        access_log=False,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def gateway(
    adapters: Mapping[str, Adapter] | Callable[[Settings], Mapping[str, Adapter]] | None = None, **overrides: object
) -> Iterator[str]:
    """Our app on a loopback port (test `settings(**overrides)`, the real adapters unless
    `adapters` are given, or made from those settings by `adapters(settings)`: an adapter
    over a scripted upstream's transport); yields its base URL. The one way tests start a
    gateway in-process."""
    from streamgate.app import create_app

    config = settings(**overrides)
    with serve(create_app(config, adapters(config) if callable(adapters) else adapters)) as url:
        yield url


def settings(**overrides: object) -> Settings:
    """Settings with test defaults (no `.env`, no keys, no model catalog asking the
    scripted upstreams for their models) and the given overrides."""
    return Settings(**{"echo_delay_ms": 0.0, "model_catalog_refresh_s": 0.0, **overrides})  # type: ignore[arg-type]


class BrokenAdapter:
    """A test provider that fails mid-stream: it answers `open_failures` times with a
    retryable 503 first (through the shared retry loop), then streams `text` and raises
    `UpstreamError` instead of finishing."""

    name = "broken"
    default_model = "broken-1"
    configured = True
    models = ("broken-1",)

    def __init__(self, text: str = "partial ", open_failures: int = 0) -> None:
        self.text = text
        self.open_failures = open_failures

    async def stream_chat(self, request: ChatRequest) -> ChunkStream:
        async def open_once() -> None:
            if self.open_failures:
                self.open_failures -= 1
                raise error_from_status(503, "overloaded", provider=self.name, key_env="-", retry_after="0")

        await open_with_retries(open_once, max_retries=2, provider=self.name)
        return ChunkStream(self._chunks())

    async def _chunks(self) -> AsyncGenerator[StreamChunk, None]:
        yield StreamChunk(self.text, None, self.default_model, self.name)
        raise UpstreamError("the upstream broke off mid-stream", provider=self.name)

    async def aclose(self) -> None:
        return None


class Answer:
    """What our client received: status, headers, the SSE events (or the JSON body)."""

    def __init__(self, response: httpx2.Response) -> None:
        self.status = response.status_code
        self.headers = response.headers
        self.raw = response.content
        self.events = [e for e in sse.Decoder().feed(self.raw) if isinstance(e, sse.Event)]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(e.data) for e in self.events if e.event == "message" and e.data != "[DONE]"]

    @property
    def text(self) -> str:
        return "".join(m["content"] for m in self.messages)

    def json(self) -> Any:
        return json.loads(self.raw)
