"""server.py over real HTTP: the error table rows that need no upstream, the framing
invariants, heartbeats, the body cap, bearer auth, CORS and client disconnect."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import time
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import httpx
import pytest
from streamgate import sse
from streamgate.adapter import ChunkStream
from streamgate.app import create_app
from streamgate.chat_types import ChatRequest, FinishReason, StreamChunk
from streamgate.errors import UpstreamTimeoutError
from streamgate.providers.echo import EchoAdapter
from support import gateway, serve, settings

HELLO = {"provider": "echo", "messages": [{"role": "user", "content": "Hello there"}]}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with gateway({"echo": EchoAdapter(0)}) as url:
        yield url


def post(base_url: str, body: Any, path: str = "/api/v1/chat/stream", **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(base_url + path, content=content, timeout=10, **kwargs)


def frames_of(raw: bytes) -> list[sse.Event | sse.Comment]:
    return sse.Decoder().feed(raw)


def check_invariants(raw: bytes) -> list[dict[str, Any]]:
    """Assert the contract's stream invariants; return the `message` frames' data."""
    events = [e for e in frames_of(raw) if isinstance(e, sse.Event)]
    assert events[-1] == sse.Event("[DONE]", "message", events[-2].id if len(events) > 1 else "")
    assert raw.endswith(b"data: [DONE]\n\n")
    messages = [e for e in events[:-1] if e.event == "message"]
    assert [int(e.id) for e in messages] == list(range(1, len(messages) + 1))
    chunks = [json.loads(e.data) for e in messages]
    finals = [i for i, c in enumerate(chunks) if c["finish_reason"] is not None]
    assert finals == [len(chunks) - 1], "exactly one final frame, and it is the last message"
    assert all(c["content"] for c in chunks[:-1]), "no empty non-final frame"
    assert all(set(c) == {"content", "finish_reason", "model", "provider", "usage"} for c in chunks)
    return chunks


# --- the stream ---------------------------------------------------------------------


def test_stream_frames_are_exactly_the_contracts(base_url: str) -> None:
    text = "Hello there,  世界 🎉\nnext line\u2028same line "
    body = {
        "provider": "echo",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
    }
    response = post(base_url, body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    chunks = check_invariants(response.content)
    assert "".join(c["content"] for c in chunks) == text
    assert chunks[0] == {"content": "Hello ", "finish_reason": None, "model": "echo", "provider": "echo", "usage": None}
    assert chunks[-1] == {
        "content": "",
        "finish_reason": "stop",
        "model": "echo",
        "provider": "echo",
        "usage": {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18},
    }
    assert response.content.startswith(
        b'id: 1\nevent: message\ndata: {"content":"Hello ","finish_reason":null,"model":"echo",'
        b'"provider":"echo","usage":null}\n\nid: 2\n'
    )


def test_empty_user_message_still_ends_with_one_final_frame(base_url: str) -> None:
    response = post(base_url, {"provider": "echo", "messages": [{"role": "user", "content": ""}]})
    chunks = check_invariants(response.content)
    assert [c["finish_reason"] for c in chunks] == ["stop"]


def test_non_streaming_answer(base_url: str) -> None:
    response = post(base_url, HELLO, path="/api/v1/chat")
    assert response.status_code == 200
    assert response.json() == {
        "content": "Hello there",
        "finish_reason": "stop",
        "model": "echo",
        "provider": "echo",
        "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4},
        "tool_calls": None,
    }


def test_start_up_freezes_the_heap_once_so_full_collections_skip_it() -> None:
    gc.unfreeze()
    with serve(create_app(settings(), adapters={"echo": EchoAdapter(0)})):
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the modules, classes and the app made at start-up
    with serve(create_app(settings(), adapters={"echo": EchoAdapter(0)})):
        assert gc.get_freeze_count() <= frozen  # a second app in the process freezes nothing more


def test_health_lists_every_adapter_without_keys(base_url: str) -> None:
    response = httpx.get(base_url + "/api/v1/chat/stream/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "providers": {"echo": {"configured": True, "default_model": "echo", "models": ["echo"]}},
    }


# --- the error table ----------------------------------------------------------------

ERROR_CASES = [
    (b"", 400, "invalid_json", "empty"),
    (b"   ", 400, "invalid_json", "empty"),
    (b"{not json", 400, "invalid_json", "not valid JSON"),
    ([1, 2], 422, "invalid_request", "$: Expected `object`"),
    ({"messages": [{"role": "user", "content": "x"}]}, 422, "invalid_request", "$.provider: required"),
    ({"provider": "echo"}, 422, "invalid_request", "$.messages: required"),
    ({"provider": "echo", "messages": []}, 422, "invalid_request", "$.messages"),
    (
        {"provider": "echo", "messages": [{"role": "robot", "content": "x"}]},
        422,
        "invalid_request",
        "$.messages[0].role",
    ),
    (
        {"provider": "echo", "messages": [{"role": "user"}]},
        422,
        "invalid_request",
        "$.messages[0].content: required field is missing",
    ),
    (
        {"provider": "echo", "messages": [{"role": "user", "content": 5}]},
        422,
        "invalid_request",
        "$.messages[0].content",
    ),
    (
        {"provider": "echo", "messages": [{"role": "system", "content": "x"}]},
        422,
        "invalid_request",
        "$.messages: at least one",
    ),
    ({**HELLO, "temperature": 2.5}, 422, "invalid_request", "$.temperature"),
    ({**HELLO, "temperature": -0.1}, 422, "invalid_request", "$.temperature"),
    ({**HELLO, "max_tokens": 0}, 422, "invalid_request", "$.max_tokens"),
    ({**HELLO, "model": ""}, 422, "invalid_request", "$.model"),
    ({**HELLO, "thinking_enabled": "yes"}, 422, "invalid_request", "$.thinking_enabled"),
    ({**HELLO, "provider": 3}, 422, "invalid_request", "$.provider"),
    ({**HELLO, "provider": "acme"}, 422, "unknown_provider", "valid: echo"),
    ({**HELLO, "model": "gpt-9"}, 422, "model_not_supported", "supported: echo"),
]


@pytest.mark.parametrize("path", ["/api/v1/chat/stream", "/api/v1/chat"])
@pytest.mark.parametrize(("body", "status", "error_type", "fragment"), ERROR_CASES)
def test_error_table(base_url: str, path: str, body: Any, status: int, error_type: str, fragment: str) -> None:
    response = post(base_url, body, path=path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] == error_type
    assert fragment in error["message"]


def test_body_over_the_cap_is_refused_by_content_length_and_while_reading() -> None:
    with serve(create_app(settings(max_body_bytes=200), adapters={"echo": EchoAdapter(0)})) as url:
        small = post(url, HELLO)
        assert small.status_code == 200
        padded = {**HELLO, "pad": "x" * 300}
        response = post(url, padded)
        assert (response.status_code, response.json()["error"]["type"]) == (413, "body_too_large")
        assert "MAX_BODY_BYTES" in response.json()["error"]["message"]

        def chunked() -> Iterator[bytes]:  # no content-length: the cap applies while reading
            yield json.dumps(padded).encode()

        response = httpx.post(url + "/api/v1/chat/stream", content=chunked(), timeout=10)
        assert (response.status_code, response.json()["error"]["type"]) == (413, "body_too_large")


def test_a_huge_upload_is_answered_before_it_is_sent() -> None:
    """A chunked upload with no length: the 413 arrives after the first 256 KiB of what
    would be a 1 GiB body, so the server is not reading (let alone buffering) the rest."""
    with serve(create_app(settings(max_body_bytes=1024), adapters={"echo": EchoAdapter(0)})) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"POST /api/v1/chat/stream HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
            block = b" " * 65536
            for _ in range(4):
                sock.sendall(b"%x\r\n%b\r\n" % (len(block), block))
            answer = read_until(sock, b"}}")
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b'"type":"body_too_large"' in answer


# --- bearer auth and CORS -----------------------------------------------------------


def test_bearer_auth_guards_the_api_in_constant_time() -> None:
    app = create_app(settings(gateway_api_key="s3cret"), adapters={"echo": EchoAdapter(0)})
    with serve(app) as url:
        for headers in (
            {},
            {"authorization": "Bearer wrong"},
            {"authorization": "s3cret"},
            {"authorization": "Bearer s3cret2"},
        ):
            response = post(url, HELLO, headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["type"] == "unauthorized"
            assert "s3cret" not in response.text
        assert httpx.get(url + "/api/v1/chat/stream/health").status_code == 401
        ok = post(url, HELLO, headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        check_invariants(ok.content)


def test_cors_allows_the_configured_origins_only() -> None:
    app = create_app(settings(cors_origins=("https://app.example",)), adapters={"echo": EchoAdapter(0)})
    with serve(app) as url:
        preflight = {
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type, x-stainless-os",
        }
        allowed = httpx.options(url + "/api/v1/chat/stream", headers={"origin": "https://app.example", **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        refused = httpx.options(url + "/api/v1/chat/stream", headers={"origin": "https://evil.example", **preflight})
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "forbidden_origin"
        streamed = post(url, HELLO, headers={"origin": "https://app.example"})
        assert streamed.headers["access-control-allow-origin"] == "https://app.example"
        assert streamed.headers["vary"] == "Origin"
        check_invariants(streamed.content)
        plain = post(url, HELLO)  # no Origin: curl, an SDK — no CORS headers, nothing to vary on
        assert "access-control-allow-origin" not in plain.headers and "vary" not in plain.headers
        check_invariants(plain.content)
        assert httpx.get(url + "/api/v1/chat/stream/health").headers["vary"] == "Origin"


# --- heartbeats and disconnect --------------------------------------------------------


class ThinkingAdapter:
    """A provider whose model thinks `think_s` before each word: silent upstreams, on demand."""

    name = "thinking"
    default_model = "thinker"
    configured = True
    models = ("thinker",)

    def __init__(self, think_s: float, words: tuple[str, ...] = ("a ", "b")) -> None:
        self.think_s = think_s
        self.words = words
        self.closed_at: float | None = None

    async def stream_chat(self, request: ChatRequest) -> ChunkStream:
        return ChunkStream(self._chunks())

    async def _chunks(self) -> AsyncGenerator[StreamChunk, None]:
        try:
            for word in self.words:
                await asyncio.sleep(self.think_s)
                yield StreamChunk(word, None, "thinker", self.name)
            yield StreamChunk("", FinishReason.STOP, "thinker", self.name)
        finally:
            self.closed_at = time.monotonic()

    async def aclose(self) -> None:
        return None


def test_keep_alive_before_the_first_token_and_between_tokens() -> None:
    adapter = ThinkingAdapter(think_s=1.0)
    with serve(create_app(settings(sse_heartbeat_s=0.3), adapters={"thinking": adapter})) as url:
        response = post(url, {"provider": "thinking", "messages": [{"role": "user", "content": "?"}]})
    events = frames_of(response.content)
    kinds = [
        "ka" if isinstance(e, sse.Comment) else json.loads(e.data)["content"] if e.data != "[DONE]" else "done"
        for e in events
    ]
    first_word = kinds.index("a ")
    # 0.3, 0.6 and 0.9 s into each 1 s silence; a late timer on a loaded machine may miss the last
    assert 2 <= kinds[:first_word].count("ka") <= 3, kinds
    assert 2 <= kinds[first_word + 1 : kinds.index("b")].count("ka") <= 3, kinds
    assert all(isinstance(e, sse.Comment) and e.text == "keep-alive" for e in events if isinstance(e, sse.Comment))
    check_invariants(response.content)


def test_no_keep_alive_when_frames_flow() -> None:
    with serve(create_app(settings(sse_heartbeat_s=0.5), adapters={"echo": EchoAdapter(50)})) as url:
        body = {"provider": "echo", "messages": [{"role": "user", "content": "one two three four five six seven"}]}
        response = post(url, body)
    assert b"keep-alive" not in response.content
    check_invariants(response.content)


def read_until(sock: socket.socket, marker: bytes, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while marker not in data:
        part = sock.recv(65536)
        if not part:
            break
        data += part
    return data


def open_stream(url: str, body: dict[str, Any]) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        b"POST /api/v1/chat/stream HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%b" % (len(payload), payload)
    )
    return sock


@pytest.mark.parametrize("heartbeat_s", [15.0, 0.2])
def test_disconnect_while_the_upstream_is_silent_closes_it_at_once(heartbeat_s: float) -> None:
    """The client leaves after the first token while the model thinks for 5 s: the adapter's
    generator is closed within 0.5 s, not at the next write (heartbeat or token)."""
    slow = ThinkingAdapter(think_s=5.0)

    class FirstFastThenSilent(ThinkingAdapter):
        async def _chunks(self) -> AsyncGenerator[StreamChunk, None]:
            try:
                yield StreamChunk("first ", None, "thinker", self.name)
                await asyncio.sleep(5.0)
                yield StreamChunk("late", None, "thinker", self.name)
                yield StreamChunk("", FinishReason.STOP, "thinker", self.name)
            finally:
                self.closed_at = time.monotonic()

    adapter = FirstFastThenSilent(think_s=0)
    app = create_app(settings(sse_heartbeat_s=heartbeat_s), adapters={"thinking": adapter, "slow": slow})
    with serve(app) as url:
        sock = open_stream(url, {"provider": "thinking", "messages": [{"role": "user", "content": "?"}]})
        assert b'"content":"first "' in read_until(sock, b'"content":"first "')
        sock.close()
        left_at = time.monotonic()
        while adapter.closed_at is None and time.monotonic() - left_at < 2:
            time.sleep(0.01)
        assert adapter.closed_at is not None and adapter.closed_at - left_at < 0.5

        # before the first token too: the client leaves during the first 5 s silence
        sock = open_stream(url, {"provider": "slow", "messages": [{"role": "user", "content": "?"}]})
        assert b"200 OK" in read_until(sock, b"\r\n\r\n")
        time.sleep(0.1)
        sock.close()
        left_at = time.monotonic()
        while slow.closed_at is None and time.monotonic() - left_at < 2:
            time.sleep(0.01)
        assert slow.closed_at is not None and slow.closed_at - left_at < 0.5


def test_echo_generator_is_closed_when_the_client_leaves() -> None:
    """The issue's own case: a slow echo stream, closed within 0.5 s of the client leaving."""
    closed: list[float] = []

    class RecordingEcho(EchoAdapter):
        async def _words(self, *args: Any) -> AsyncGenerator[StreamChunk, None]:
            try:
                async for chunk in super()._words(*args):
                    yield chunk
            finally:
                closed.append(time.monotonic())

    with serve(create_app(settings(), adapters={"echo": RecordingEcho(3000)})) as url:
        sock = open_stream(url, {"provider": "echo", "messages": [{"role": "user", "content": "one two three"}]})
        read_until(sock, b'"content":"one "')
        sock.close()
        left_at = time.monotonic()
        while not closed and time.monotonic() - left_at < 2:
            time.sleep(0.01)
    assert closed and closed[0] - left_at < 0.5


# --- failures after the 200 -----------------------------------------------------------


class BrokenAdapter(ThinkingAdapter):
    """Sends one word, then fails the way an upstream can."""

    name = "broken"

    def __init__(self, failure: Exception) -> None:
        super().__init__(0)
        self.failure = failure

    async def _chunks(self) -> AsyncGenerator[StreamChunk, None]:
        yield StreamChunk("partial ", None, "thinker", self.name)
        raise self.failure


@pytest.mark.parametrize(
    ("failure", "error_type"),
    [
        (UpstreamTimeoutError("the upstream stalled", provider="broken"), "upstream_timeout"),
        (RuntimeError("a bug"), "upstream_error"),
    ],
)
def test_a_failure_after_the_200_ends_with_an_error_frame_then_done(failure: Exception, error_type: str) -> None:
    with serve(create_app(settings(), adapters={"broken": BrokenAdapter(failure)})) as url:
        response = post(url, {"provider": "broken", "messages": [{"role": "user", "content": "?"}]})
        events = [e for e in frames_of(response.content) if isinstance(e, sse.Event)]
        assert response.status_code == 200
        assert [e.event for e in events] == ["message", "message", "error", "message"]
        assert json.loads(events[1].data) == {
            "content": "",
            "finish_reason": "error",
            "model": "thinker",
            "provider": "broken",
            "usage": None,
        }
        assert json.loads(events[2].data)["error"]["type"] == error_type
        assert events[2].id == "3"
        assert events[3].data == "[DONE]"
        check_invariants(response.content)
        whole = post(url, {"provider": "broken", "messages": [{"role": "user", "content": "?"}]}, path="/api/v1/chat")
        assert (whole.status_code, whole.json()["error"]["type"]) == (
            504 if error_type == "upstream_timeout" else 502,
            error_type,
        )
