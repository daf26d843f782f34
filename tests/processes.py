"""Test helpers for real processes: `python server.py` gateways and a `redis-server`,
each started on a free loopback port and stopped by its PID."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "TOGETHER_API_KEY", "GATEWAY_API_KEY")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # type: ignore[no-any-return]


def wait_until_answering(process: subprocess.Popen[bytes], url: str, timeout_s: float = 90.0) -> None:
    """Poll `url` until it answers; fail with the process's output if it exits first or
    `timeout_s` passes (starting imports three SDKs: slow on a loaded machine)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            output = process.stdout or process.stderr
            assert process.poll() is None, output.read().decode() if output else "the process exited"
            assert time.monotonic() < deadline, f"{url} did not answer within {timeout_s} s"
            time.sleep(0.05)


class RedisServer:
    """A `redis-server` on a loopback port, no persistence; stop and start it again."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def gateways(directory: Path, count: int, **env: str) -> Iterator[list[tuple[subprocess.Popen[bytes], str]]]:
    """`count` processes of `python server.py`, started at once (no keys, no `.env`)."""
    started = []
    for _ in range(count):
        port = free_port()
        environment = {k: v for k, v in os.environ.items() if k not in KEYS}
        environment.update({"PORT": str(port), **env})
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "server.py")],
            cwd=directory,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        started.append((process, f"http://127.0.0.1:{port}"))
    try:
        for process, url in started:
            wait_until_answering(process, url + "/api/v1/chat/stream/health")
        yield started
    finally:
        for process, _ in started:
            if process.poll() is None:
                process.kill()
            process.wait(10)
