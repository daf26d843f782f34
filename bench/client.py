"""The bench's load client: raw asyncio + httptools + `sse.Decoder` + msgspec, one core.

Every stream is checked: its concatenated `content` must equal exactly the text the mock
sent, it must end the way its dialect ends (`[DONE]`, `message_stop`, a finish reason),
with status 200, no error frame, in time. Anything else is a failed stream, and failed
streams are left out of every latency and throughput figure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import httptools
import msgspec
from streamgate import sse

from bench.mock_upstream import expected_text, model_name, tool_arguments

# --- reading one frame of each dialect --------------------------------------------------
# A reader turns one SSE event into (content, final, error); `content` may be "".
# A native `tool_call` frame reads as its arguments fragment, so a `-tool` stream is checked
# like text: the fragments must join to exactly the arguments the mock sent.


class _NativeChunk(msgspec.Struct):
    content: str
    finish_reason: str | None


class _NativeToolCall(msgspec.Struct):
    index: int
    arguments: str = ""


class _Delta(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta
    finish_reason: str | None = None


class _OpenAIChunk(msgspec.Struct):
    choices: list[_Choice] = []
    error: dict[str, object] | None = None


class _TextDelta(msgspec.Struct):
    text: str = ""


class _AnthropicDelta(msgspec.Struct):
    delta: _TextDelta


class _Part(msgspec.Struct):
    text: str = ""
    thought: bool = False


class _Content(msgspec.Struct):
    parts: list[_Part] = []


class _Candidate(msgspec.Struct):
    content: _Content = msgspec.field(default_factory=_Content)
    finishReason: str | None = None


class _GeminiChunk(msgspec.Struct):
    candidates: list[_Candidate] = []
    error: dict[str, object] | None = None


_native = msgspec.json.Decoder(_NativeChunk)
_native_tool_call = msgspec.json.Decoder(_NativeToolCall)
_openai = msgspec.json.Decoder(_OpenAIChunk)
_anthropic_delta = msgspec.json.Decoder(_AnthropicDelta)
_gemini = msgspec.json.Decoder(_GeminiChunk)

DONE_DATA = "[DONE]"
Frame = tuple[str, bool, bool]  # content, final, error
NOTHING: Frame = ("", False, False)
FINAL: Frame = ("", True, False)
ERROR: Frame = ("", False, True)


def read_native(event: sse.Event) -> Frame:
    if event.event == "error":
        return ERROR
    if event.event == "tool_call":
        call = _native_tool_call.decode(event.data)
        return (call.arguments, False, False) if call.index == 0 else ERROR
    chunk = _native.decode(event.data)
    if chunk.finish_reason is None:
        return chunk.content, False, False
    return chunk.content, True, chunk.finish_reason == "error"


def read_openai(event: sse.Event) -> Frame:
    chunk = _openai.decode(event.data)
    if chunk.error is not None:
        return ERROR
    if not chunk.choices:
        return NOTHING
    choice = chunk.choices[0]
    return choice.delta.content or "", choice.finish_reason is not None, False


def read_anthropic(event: sse.Event) -> Frame:
    if event.event == "content_block_delta":
        return _anthropic_delta.decode(event.data).delta.text, False, False
    if event.event == "message_stop":
        return FINAL
    if event.event == "error":
        return ERROR
    return NOTHING


def read_gemini(event: sse.Event) -> Frame:
    chunk = _gemini.decode(event.data)
    if chunk.error is not None:
        return ERROR
    if not chunk.candidates:
        return NOTHING
    candidate = chunk.candidates[0]
    text = "".join(part.text for part in candidate.content.parts if not part.thought)
    return text, candidate.finishReason is not None, False


# --- the dialects -------------------------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    """How to ask for a stream and how to read it."""

    name: str
    path: Callable[[str], str]  # model -> request path
    body: Callable[[str, str], bytes]  # (model, provider) -> request body
    read: Callable[[sse.Event], Frame]
    ends_with_done: bool  # `data: [DONE]` must close the stream


_MESSAGES = [{"role": "user", "content": "Say the bench text."}]
_encode = msgspec.json.encode

DIALECTS = {
    "native": Dialect(
        "native",
        lambda model: "/api/v1/chat/stream",
        lambda model, provider: _encode({"provider": provider, "model": model, "messages": _MESSAGES}),
        read_native,
        True,
    ),
    "openai": Dialect(
        "openai",
        lambda model: "/v1/chat/completions",
        lambda model, provider: _encode(
            {"model": model, "messages": _MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
        ),
        read_openai,
        True,
    ),
    "anthropic": Dialect(
        "anthropic",
        lambda model: "/v1/messages",
        lambda model, provider: _encode({"model": model, "max_tokens": 1024, "messages": _MESSAGES, "stream": True}),
        read_anthropic,
        False,
    ),
    "gemini": Dialect(
        "gemini",
        lambda model: f"/v1beta/models/{model}:streamGenerateContent?alt=sse",
        lambda model, provider: _encode({"contents": [{"role": "user", "parts": [{"text": "Say it."}]}]}),
        read_gemini,
        False,
    ),
}


# --- checking one stream ------------------------------------------------------------------


class StreamCheck:
    """Feed it a response's body bytes; it keeps the text, the timing and what went wrong."""

    __slots__ = (
        "decoder",
        "done",
        "ends_with_done",
        "final",
        "first_content_at",
        "frames",
        "parts",
        "problem",
        "read",
        "status",
    )

    def __init__(self, dialect: Dialect) -> None:
        self.read = dialect.read
        self.ends_with_done = dialect.ends_with_done
        self.decoder = sse.Decoder()
        self.parts: list[str] = []
        self.status = 0
        self.first_content_at = 0.0
        self.frames = 0
        self.final = False
        self.done = False
        self.problem = ""

    def feed(self, data: bytes) -> None:
        for event in self.decoder.feed(data):
            if type(event) is not sse.Event:
                continue  # a comment (`: keep-alive`, `: ping`)
            if event.data == DONE_DATA:
                self.done = True
                continue
            try:
                content, final, error = self.read(event)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self.problem = self.problem or f"undecodable frame: {exc}"
                continue
            if error:
                self.problem = self.problem or f"error frame: {event.data[:200]}"
            if content:
                if not self.first_content_at:
                    self.first_content_at = time.perf_counter()
                self.frames += 1
                self.parts.append(content)
            if final:
                if self.final:
                    self.problem = self.problem or "two final frames"
                self.final = True

    def verdict(self, expected: str) -> str:
        """ "" when the stream is good, else why it failed."""
        if self.status != 200:
            return f"HTTP {self.status}"
        if self.problem:
            return self.problem
        if not self.final:
            return "no final frame"
        if self.ends_with_done and not self.done:
            return "no [DONE]"
        text = "".join(self.parts)
        if text != expected:
            at = next((i for i, (a, b) in enumerate(zip(text, expected)) if a != b), min(len(text), len(expected)))
            return f"text differs at character {at} (got {len(text)} chars, expected {len(expected)})"
        return ""


@dataclass(slots=True)
class Outcome:
    """One stream's result; times are `time.perf_counter()` seconds."""

    failure: str  # "" when ok
    started_at: float
    first_content_at: float
    ended_at: float
    frames: int

    @property
    def ok(self) -> bool:
        return not self.failure

    @property
    def ttft(self) -> float:
        return self.first_content_at - self.started_at


# --- one connection -----------------------------------------------------------------------


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one stream at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.check: StreamCheck | None = None
        self.finished: asyncio.Future[None] | None = None
        self.reusable = False

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        _, connection = await asyncio.get_running_loop().create_connection(cls, host, port)
        return connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes, check: StreamCheck) -> asyncio.Future[None]:
        self.check = check
        self.parser = httptools.HttpResponseParser(self)
        self.reusable = False
        self.finished = asyncio.get_running_loop().create_future()
        self.transport.write(request)  # type: ignore[union-attr]
        return self.finished

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)  # type: ignore[union-attr]
        except httptools.HttpParserError as exc:
            self._finish(f"bad HTTP: {exc}")
            self.abort()

    def on_headers_complete(self) -> None:
        self.check.status = self.parser.get_status_code()  # type: ignore[union-attr]

    def on_body(self, body: bytes) -> None:
        self.check.feed(body)  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        self.reusable = self.parser.should_keep_alive()  # type: ignore[union-attr]
        self._finish("")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.reusable = False
        self._finish("connection closed mid-stream")

    def _finish(self, problem: str) -> None:
        if self.finished is not None and not self.finished.done():
            if problem and self.check is not None and not self.check.problem:
                self.check.problem = problem
            self.finished.set_result(None)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.reusable = False


# --- targets and load ---------------------------------------------------------------------


@dataclass
class Target:
    """Something to measure: an address, the dialect it speaks, and its server's pid."""

    name: str
    host: str
    port: int
    dialect: Dialect
    provider: str = "openai"
    pid: int | None = None

    def request(self, model: str) -> bytes:
        body = self.dialect.body(model, self.provider)
        head = (
            f"POST {self.dialect.path(model)} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            f"content-type: application/json\r\naccept: text/event-stream\r\n"
            f"authorization: Bearer bench\r\nx-api-key: bench\r\nx-goog-api-key: bench\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body


async def stream_once(
    connection: Connection, target: Target, request: bytes, expected: str, timeout_s: float
) -> Outcome:
    """Send one request on `connection` and check its stream (aborting it after `timeout_s`)."""
    check = StreamCheck(target.dialect)
    finished = connection.send(request, check)
    started_at = time.perf_counter()
    timer = asyncio.get_running_loop().call_later(timeout_s, _time_out, connection, check)
    try:
        await finished
    finally:
        timer.cancel()
    return Outcome(check.verdict(expected), started_at, check.first_content_at, time.perf_counter(), check.frames)


def _time_out(connection: Connection, check: StreamCheck) -> None:
    check.problem = check.problem or "timed out"
    connection.abort()


async def run_streams(
    target: Target,
    *,
    count: int,
    concurrency: int,
    tokens: int,
    delay_ms: float,
    timeout_s: float,
    fault: str = "",
    tool: bool = False,
) -> list[Outcome]:
    """`count` streams, `concurrency` at a time, each over a reused connection."""
    model = model_name(tokens, delay_ms, fault, tool)
    request, expected = target.request(model), tool_arguments(tokens) if tool else expected_text(tokens)
    outcomes: list[Outcome] = []
    remaining = [count]

    async def worker() -> None:
        connection: Connection | None = None
        while remaining[0] > 0:
            remaining[0] -= 1
            try:
                if connection is None or not connection.reusable:
                    if connection is not None:
                        connection.abort()
                    connection = await Connection.open(target.host, target.port)
                outcome = await stream_once(connection, target, request, expected, timeout_s)
            except OSError as exc:
                now = time.perf_counter()
                outcome = Outcome(f"connect failed: {exc}", now, 0.0, now, 0)
                connection = None
            outcomes.append(outcome)
        if connection is not None:
            connection.abort()

    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    return outcomes


def due_count(elapsed_s: float, rate: float, count: int) -> int:
    """How many of `count` requests sent `rate` per second are due `elapsed_s` after the
    start (request i is due at i / rate; the first at 0)."""
    if elapsed_s < 0:
        return 0
    return min(count, int(elapsed_s * rate) + 1)


async def run_open_loop(
    target: Target, *, rate: float, duration_s: float, tokens: int, timeout_s: float, delay_ms: float = 0
) -> list[Outcome]:
    """Requests sent at `rate` per second for `duration_s`, each at its due time whether or
    not earlier ones have ended (a new connection when no idle one is left). An outcome's
    `started_at` is the request's due time, so a client or server falling behind shows in
    its TTFT instead of thinning the load."""
    loop = asyncio.get_running_loop()
    request, expected = target.request(model_name(tokens, delay_ms)), expected_text(tokens)
    count = max(1, round(rate * duration_s))
    idle: list[Connection] = []
    outcomes: list[Outcome] = []
    running: set[asyncio.Task[None]] = set()

    async def one(due_at: float) -> None:
        connection = None
        while idle and connection is None:
            candidate = idle.pop()
            connection = candidate if candidate.reusable else None
        try:
            if connection is None:
                connection = await Connection.open(target.host, target.port)
            outcome = await stream_once(connection, target, request, expected, timeout_s)
        except OSError as exc:
            now = time.perf_counter()
            outcomes.append(Outcome(f"connect failed: {exc}", due_at, 0.0, now, 0))
            return
        outcome.started_at = due_at
        outcomes.append(outcome)
        if connection.reusable:
            idle.append(connection)
        else:
            connection.abort()

    started, sent = time.perf_counter(), 0
    while sent < count:
        due = due_count(time.perf_counter() - started, rate, count)
        for index in range(sent, due):
            task = loop.create_task(one(started + index / rate))
            running.add(task)
            task.add_done_callback(running.discard)
        sent = due
        if sent < count:
            await asyncio.sleep(max(0.0, started + sent / rate - time.perf_counter()))
    while running:
        await asyncio.gather(*running)
    for connection in idle:
        connection.abort()
    return outcomes


class HeldStreams:
    """Many streams opened and held (for the memory phase), then all aborted at once."""

    def __init__(self, target: Target, tokens: int, delay_ms: float) -> None:
        self.target = target
        self.request = target.request(model_name(tokens, delay_ms))
        self.held: list[tuple[Connection, StreamCheck, asyncio.Future[None]]] = []

    async def open(self, count: int, *, concurrency: int, timeout_s: float) -> int:
        """Open `count` streams; return how many have their first content within `timeout_s`."""
        deadline = time.perf_counter() + timeout_s
        semaphore = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with semaphore:
                try:
                    connection = await Connection.open(self.target.host, self.target.port)
                except OSError:
                    return
                check = StreamCheck(self.target.dialect)
                self.held.append((connection, check, connection.send(self.request, check)))
                while not check.first_content_at and not check.problem and time.perf_counter() < deadline:
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(one() for _ in range(count)))
        return sum(
            1
            for _, check, finished in self.held
            if check.first_content_at and not check.problem and not finished.done()
        )

    def abort_all(self) -> float:
        """Abort every held connection; return `time.monotonic()` of the abort."""
        aborted_at = time.monotonic()
        for connection, _, _ in self.held:
            connection.abort()
        return aborted_at


async def get_json(host: str, port: int, path: str, method: str = "GET") -> object:
    """A tiny HTTP/1.1 JSON request (the mock's stats, a health check)."""
    return msgspec.json.decode(await get_body(host, port, path, method))


async def get_text(host: str, port: int, path: str) -> str:
    """A tiny HTTP/1.1 GET of a text body (a server's `/metrics`)."""
    return (await get_body(host, port, path)).decode()


async def get_body(host: str, port: int, path: str, method: str = "GET") -> bytes:
    """The body of a 200 answer to a tiny HTTP/1.1 request with a `content-length` answer."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: 0\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        body = await reader.readexactly(length)
    finally:
        writer.close()
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"{path}: {head[:100]!r}")
    return body
