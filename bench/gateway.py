"""streamgate as `python -m bench live` meets it: started as a subprocess on a free loopback
port (or a running one at a URL), and one chat request streamed through its native
endpoint, `POST /api/v1/chat/stream`, with httpx2 (the HTTP client the SDKs use, so both
sides of a comparison pay the same client)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import httpx2
import msgspec
from streamgate import sse

from bench.providers_direct import Stopwatch

HEALTH = "/api/v1/chat/stream/health"
STREAM = "/api/v1/chat/stream"


class _Usage(msgspec.Struct):
    completion_tokens: int | None = None


class _Chunk(msgspec.Struct):
    content: str = ""
    finish_reason: str | None = None
    model: str = ""
    provider: str = ""
    usage: _Usage | None = None


class _ErrorDetail(msgspec.Struct):
    type: str = "unknown"


class _Error(msgspec.Struct):
    error: _ErrorDetail = msgspec.field(default_factory=_ErrorDetail)


_chunk = msgspec.json.Decoder(_Chunk)
_error = msgspec.json.Decoder(_Error)


class GatewayError(Exception):
    """The gateway refused the request or ended the stream with an error; `kind` is its type."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class Served(msgspec.Struct):
    """What one stream through the gateway reported: who served it and the output tokens."""

    provider: str = ""
    model: str = ""
    output_tokens: int | None = None


def request_body(provider: str | None, model: str | None, prompt: str, max_tokens: int) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}
    if provider is not None:
        body["provider"] = provider
    if model is not None:
        body["model"] = model
    return body


def error_kind(data: bytes, prefix: str) -> str:
    try:
        return f"{prefix} {_error.decode(data).error.type}"
    except (msgspec.DecodeError, msgspec.ValidationError):
        return prefix


def read_events(events: list[sse.Event | sse.Comment], watch: Stopwatch, served: Served) -> None:
    for event in events:
        if type(event) is not sse.Event or event.data == "[DONE]":
            continue
        if event.event == "error":
            raise GatewayError(error_kind(event.data.encode(), "stream"))
        if event.event != "message":
            continue  # reasoning, tool_call: not answer text
        chunk = _chunk.decode(event.data)
        watch.text(chunk.content)
        served.provider, served.model = chunk.provider, chunk.model
        if chunk.usage is not None:
            served.output_tokens = chunk.usage.completion_tokens


async def stream_through(client: httpx2.AsyncClient, body: dict[str, Any], watch: Stopwatch) -> Served:
    """One stream through the gateway; raises `GatewayError` on a refusal or an error frame."""
    served = Served()
    decoder = sse.Decoder()
    async with client.stream("POST", STREAM, json=body) as response:
        if response.status_code != 200:
            raise GatewayError(error_kind(await response.aread(), f"http {response.status_code}"))
        async for data in response.aiter_bytes():
            read_events(decoder.feed(data), watch, served)
    return served


# --- a gateway of our own -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnGateway:
    """`python -m streamgate` on a free loopback port with this process's environment, in a
    session of its own (a Ctrl-C at the terminal reaches only us), stopped by its PID."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.log: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port), "WORKERS": "1"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in `stop`
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamgate"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    async def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx2.AsyncClient(base_url=self.url, timeout=2) as client:
            while True:
                try:
                    if (await client.get(HEALTH)).status_code == 200:
                        return
                except httpx2.TransportError:
                    pass
                if self.process is None or self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the gateway did not start; see {self.log_path}")
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(5)
        if self.log is not None:
            self.log.close()
            self.log = None
