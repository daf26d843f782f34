"""`python server.py` as a newcomer and an operator run it: no keys, SIGTERM, bad settings."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from streamgate import sse

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "TOGETHER_API_KEY", "GATEWAY_API_KEY")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server_process(tmp_path: Path, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`python server.py` from a directory without `.env`, with no provider keys."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if k not in KEYS}
    environment.update({"PORT": str(port), **env})
    process = subprocess.Popen([sys.executable, str(ROOT / "server.py")], cwd=tmp_path, env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(url + "/api/v1/chat/stream/health", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.05)
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def test_runs_with_no_keys_and_echo_streams(tmp_path: Path) -> None:
    with server_process(tmp_path, ECHO_DELAY_MS="1") as (_, url):
        health = httpx.get(url + "/api/v1/chat/stream/health").json()
        configured = {name: entry["configured"] for name, entry in health["providers"].items()}
        assert configured == {"openai": False, "llama4": False, "anthropic": False, "gemini": False, "echo": True}
        body = {"provider": "echo", "messages": [{"role": "user", "content": "Hello there"}]}
        response = httpx.post(url + "/api/v1/chat/stream", json=body)
        events = [e for e in sse.Decoder().feed(response.content) if isinstance(e, sse.Event)]
        assert [json.loads(e.data)["content"] for e in events[:-1]] == ["Hello ", "there", ""]
        assert events[-1].data == "[DONE]"


def test_sigterm_lets_the_streams_in_flight_finish(tmp_path: Path) -> None:
    with server_process(tmp_path, ECHO_DELAY_MS="150", SHUTDOWN_GRACE_S="10") as (process, url):
        words = " ".join(f"w{i}" for i in range(10))
        body = {"provider": "echo", "messages": [{"role": "user", "content": words}]}
        with httpx.stream("POST", url + "/api/v1/chat/stream", json=body, timeout=10) as response:
            chunks = response.iter_bytes()
            received = next(chunks)
            process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            try:  # no new requests once the shutdown began
                httpx.get(url + "/api/v1/chat/stream/health", timeout=1)
                refused = False
            except httpx.TransportError:
                refused = True
            received += b"".join(chunks)
        assert refused
        events = [e for e in sse.Decoder().feed(received) if isinstance(e, sse.Event)]
        assert "".join(json.loads(e.data)["content"] for e in events[:-1]) == words
        assert events[-1].data == "[DONE]"
        # uvicorn re-raises the signal once the graceful shutdown is complete
        assert process.wait(10) in (0, -signal.SIGTERM)
        assert b"Finished server process" in process.stdout.read()  # type: ignore[union-attr]


def test_a_bad_setting_stops_start_up_naming_the_variable(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if k not in KEYS}
    environment.update({"MAX_BODY_BYTES": "lots"})
    result = subprocess.run([sys.executable, str(ROOT / "server.py")], cwd=tmp_path, env=environment,
                            capture_output=True, timeout=30)
    assert result.returncode != 0
    assert b"MAX_BODY_BYTES" in result.stderr


def test_dot_env_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("ECHO_DELAY_MS=0\nGATEWAY_API_KEY=from-dotenv\n")
    with server_process(tmp_path) as (_, url):
        assert httpx.get(url + "/api/v1/chat/stream/health").status_code == 401
        headers = {"authorization": "Bearer from-dotenv"}
        assert httpx.get(url + "/api/v1/chat/stream/health", headers=headers).status_code == 200
    with server_process(tmp_path, GATEWAY_API_KEY="from-env") as (_, url):
        headers = {"authorization": "Bearer from-env"}
        assert httpx.get(url + "/api/v1/chat/stream/health", headers=headers).status_code == 200
