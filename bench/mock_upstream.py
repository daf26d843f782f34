"""A loopback upstream that speaks the providers' real streaming wire formats, cheaply.

Every response is built once per (format, model, token count) and cached as ready
HTTP/1.1 chunked-encoding bytes, so serving a stream costs a few `transport.write`s.

Per-request control goes through the model name, which every gateway forwards:
`bench-<tokens>-<delay_ms>` (e.g. `bench-16-5`), optionally with a fault for testing the
harness itself: `bench-16-0-drop3` leaves token 3 out, `bench-16-0-garble3` changes its text.
A `-tool` suffix (`bench-16-0-tool`, OpenAI wire only) makes the answer one tool call whose
arguments arrive as one `delta.tool_calls` fragment per token: `tool_arguments(tokens)`.
A `-ttft<ms>[j<ms>]` part (`bench-16-5-ttft50j5`) holds the first token back that long after
the response head, give or take the jitter (uniform), as a real model's time to first token.

For `python -m bench live` (real model names, real prompts): `--any-model SPEC` serves every
model name that is not `bench-…` as `SPEC` (e.g. `bench-32-2-ttft50j5`), the stream then
naming the model asked for. A request body containing `bench-status-<code>` (e.g. in the
prompt) is answered with that HTTP status and the provider's own error body.

Routes:
- `POST /v1/chat/completions`: OpenAI / Together `chat.completion.chunk` SSE (role-only
  first delta, one chunk per token, the finish chunk, the usage chunk, `[DONE]`);
- `POST /v1/messages`: Anthropic's named events (`message_start` … `message_stop`);
- `POST /v1[beta]/models/<model>:streamGenerateContent?alt=sse`: Gemini's CRLF `data:` frames;
- `GET /_bench/stats`, `POST /_bench/reset`: streams completed, open, and the monotonic
  times at which a peer closed a stream before its end (`aborted_at`).

Run: `python -m bench.mock_upstream [--port N]`; it prints `PORT <n>` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import time
from functools import lru_cache

import httptools

# Every token's text is known to the client, so it can check each stream exactly:
# multi-byte UTF-8, newlines, JSON escapes, and U+2028 (a line break only to `str.splitlines`).
VOCABULARY = (
    "Hello",
    " world",
    ",",
    " héllo",
    " naïve",
    " 世界",
    " 🙂",
    "\n",
    " line\n\n",
    ' "quoted"',
    " tab\t",
    " back\\slash",
    " Ωμέγα",
    "\u2028",
    " ⅓",
    " end.",
)


def token_text(index: int) -> str:
    return VOCABULARY[index % len(VOCABULARY)]


@lru_cache(maxsize=64)
def expected_text(tokens: int) -> str:
    """The whole answer of a stream of `tokens` tokens."""
    return "".join(token_text(i) for i in range(tokens))


MODEL = re.compile(r"bench-(\d+)-(\d+)(?:-(drop|garble)(\d+))?(?:-ttft(\d+)(?:j(\d+))?)?(-tool)?")
STATUS_MARK = re.compile(rb"bench-status-([1-5]\d\d)")
BODY_MODEL = re.compile(rb'"model"\s*:\s*"([^"]*)"')
GEMINI_PATH = re.compile(r"/v1(?:beta|alpha)?/models/([^/:]+):streamGenerateContent")


def model_name(tokens: int, delay_ms: float, fault: str = "", tool: bool = False) -> str:
    return f"bench-{tokens}-{int(delay_ms)}" + (f"-{fault}" if fault else "") + ("-tool" if tool else "")


TOOL_NAME, TOOL_CALL_ID = "bench_tool", "call_bench"


def tool_fragments(texts: list[str]) -> list[str]:
    """One arguments fragment per token: the texts as one JSON string value, `{"text":"…"}`."""
    fragments = [json.dumps(text, ensure_ascii=False)[1:-1] for text in texts]
    if fragments:
        fragments[0] = '{"text":"' + fragments[0]
        fragments[-1] += '"}'
    return fragments


@lru_cache(maxsize=64)
def tool_arguments(tokens: int) -> str:
    """The whole arguments JSON of a `-tool` stream of `tokens` tokens."""
    return "".join(tool_fragments([token_text(i) for i in range(tokens)]))


def _dumps(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class Script:
    """A stream ready to send: head (status, headers, opening events), one chunk per
    token, and the tail (finish, usage, end); `ttft_s`, `jitter_s`: the first token's wait."""

    __slots__ = ("head", "jitter_s", "tail", "tokens", "ttft_s")

    def __init__(self, head: bytes, tokens: list[bytes], tail: bytes) -> None:
        self.head, self.tokens, self.tail = head, tokens, tail
        self.ttft_s = self.jitter_s = 0.0

    def first_token_wait(self) -> float:
        if not self.ttft_s:
            return 0.0
        return max(0.0, self.ttft_s + random.uniform(-self.jitter_s, self.jitter_s))


def _texts(tokens: int, fault: str | None, at: int) -> list[str]:
    texts = [token_text(i) for i in range(tokens)]
    if fault == "garble" and at < tokens:
        texts[at] = texts[at] + "?"
    if fault == "drop" and at < tokens:
        del texts[at]
    return texts


HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\nx-request-id: req_bench\r\ntransfer-encoding: chunked\r\n\r\n"
)
END = b"0\r\n\r\n"


def openai_script(model: str, texts: list[str], tool: bool = False) -> Script:
    """`tool`: the answer is one call, its id and name on the first delta (arguments ""),
    then one `delta.tool_calls` arguments fragment per token, then `finish_reason: tool_calls`."""
    base = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "system_fingerprint": "fp_bench",
    }

    def frame(choices: list[object], usage: object = None) -> bytes:
        return _chunk(b"data: " + _dumps({**base, "choices": choices, "usage": usage}) + b"\n\n")

    def delta(delta: dict[str, object], finish: str | None = None) -> bytes:
        return frame([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])

    usage = {
        "prompt_tokens": 9,
        "completion_tokens": len(texts),
        "total_tokens": 9 + len(texts),
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    first: dict[str, object] = {"role": "assistant", "content": "", "refusal": None}
    if tool:
        first = {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [
                {"index": 0, "id": TOOL_CALL_ID, "type": "function", "function": {"name": TOOL_NAME, "arguments": ""}}
            ],
        }
        tokens = [
            delta({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]})
            for fragment in tool_fragments(texts)
        ]
    else:
        tokens = [delta({"content": text}) for text in texts]
    tail = delta({}, "tool_calls" if tool else "stop") + frame([], usage) + _chunk(b"data: [DONE]\n\n") + END
    return Script(HEAD + delta(first), tokens, tail)


def anthropic_script(model: str, texts: list[str]) -> Script:
    def event(name: str, data: dict[str, object]) -> bytes:
        return _chunk(b"event: %b\ndata: %b\n\n" % (name.encode(), _dumps({"type": name, **data})))

    message = {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 9,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 1,
        },
    }
    head = (
        HEAD
        + event("message_start", {"message": message})
        + event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        + event("ping", {})
    )
    tokens = [
        event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}}) for text in texts
    ]
    tail = (
        event("content_block_stop", {"index": 0})
        + event(
            "message_delta",
            {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": len(texts)}},
        )
        + event("message_stop", {})
        + END
    )
    return Script(head, tokens, tail)


def gemini_script(model: str, texts: list[str]) -> Script:
    def frame(text: str, finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
        candidate: dict[str, object] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        body = {
            "candidates": [candidate],
            "usageMetadata": usage or {"promptTokenCount": 9, "totalTokenCount": 9},
            "modelVersion": model,
            "responseId": "resp_bench",
        }
        return _chunk(b"data: " + _dumps(body) + b"\r\n\r\n")

    usage = {"promptTokenCount": 9, "candidatesTokenCount": len(texts), "totalTokenCount": 9 + len(texts)}
    head = HEAD.replace(b"; charset=utf-8", b"")
    return Script(head, [frame(text) for text in texts], frame("", "STOP", usage) + END)


SCRIPTS = {"openai": openai_script, "anthropic": anthropic_script, "gemini": gemini_script}


@lru_cache(maxsize=256)
def script(wire: str, model: str, spec: str | None = None) -> tuple[Script, float]:
    """The cached stream for `model` (`bench-<tokens>-<delay_ms>[-fault][-ttft<ms>[j<ms>]][-tool]`,
    or any name when `spec` is such a name) and its delay between tokens in s."""
    match = MODEL.fullmatch(model) or (MODEL.fullmatch(spec) if spec else None)
    if match is None:
        raise ValueError(f"model {model!r} is not bench-<tokens>-<delay_ms>")
    tokens, delay_ms, fault, at, ttft_ms, jitter_ms, tool = match.groups()
    texts = _texts(int(tokens), fault, int(at or 0))
    if tool and wire != "openai":
        raise ValueError(f"model {model!r}: tool streams are OpenAI wire only")
    stream = openai_script(model, texts, tool=True) if tool else SCRIPTS[wire](model, texts)
    stream.ttft_s, stream.jitter_s = int(ttft_ms or 0) / 1000, int(jitter_ms or 0) / 1000
    return stream, int(delay_ms) / 1000


def error_body(wire: str, status: int) -> bytes:
    """The body each provider sends with an HTTP error status."""
    message = f"bench: injected HTTP {status}"
    if wire == "anthropic":
        kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
        return _dumps({"type": "error", "error": {"type": kind, "message": message}})
    if wire == "gemini":
        return _dumps({"error": {"code": status, "message": message, "status": "INTERNAL"}})
    return _dumps({"error": {"message": message, "type": "server_error", "param": None, "code": None}})


class Stats:
    def __init__(self) -> None:
        self.completed = 0
        self.open = 0
        self.aborted_at: list[float] = []

    def body(self) -> bytes:
        return _dumps({"completed": self.completed, "open": self.open, "aborted_at": self.aborted_at})


BATCH = 16  # tokens per write when there is no delay
REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
}


class UpstreamProtocol(asyncio.Protocol):
    """One client connection: parse requests with httptools, answer from the cache."""

    def __init__(self, stats: Stats, any_model: str | None = None) -> None:
        self.stats = stats
        self.any_model = any_model
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.streaming: asyncio.Task[None] | None = None
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._respond(400, b'{"error":"bad request"}', close=True)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.streaming is not None and not self.streaming.done():
            self.streaming.cancel()
            self.stats.open -= 1
            self.stats.aborted_at.append(time.monotonic())
        self.transport = None
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        url, body = self.url.decode(), b"".join(self.body)
        self.url, self.body = b"", []
        method = self.parser.get_method()
        path = url.partition("?")[0]
        if path == "/_bench/stats":
            self._respond(200, self.stats.body())
            return
        if path == "/_bench/reset" and method == b"POST":
            self.stats.__init__()  # type: ignore[misc]
            self._respond(200, b"{}")
            return
        wire, model = self._route(path, body)
        if wire is None:
            self._respond(404, b'{"error":{"message":"no such route","type":"not_found"}}')
            return
        status = STATUS_MARK.search(body)
        if status is not None:
            self._respond(int(status.group(1)), error_body(wire, int(status.group(1))))
            return
        try:
            stream, delay_s = script(wire, model, self.any_model)
        except ValueError as error:
            self._respond(400, _dumps({"error": {"message": str(error), "type": "invalid_request_error"}}))
            return
        self.stats.open += 1
        self.streaming = asyncio.get_running_loop().create_task(self._stream(stream, delay_s))

    @staticmethod
    def _route(path: str, body: bytes) -> tuple[str | None, str]:
        if path.endswith(("/chat/completions", "/messages")):
            match = BODY_MODEL.search(body)
            model = match.group(1).decode() if match else ""
            return ("openai" if path.endswith("/chat/completions") else "anthropic"), model
        match = GEMINI_PATH.search(path)
        if match:
            return "gemini", match.group(1)
        return None, ""

    def _respond(self, status: int, body: bytes, close: bool = False) -> None:
        if self.transport is None:
            return
        reason = REASONS.get(status, b"Error")
        self.transport.write(
            b"HTTP/1.1 %d %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
            % (status, reason, len(body), body)
        )
        if close:
            self.transport.close()

    async def _stream(self, stream: Script, delay_s: float) -> None:
        write = self.transport.write  # type: ignore[union-attr]
        tokens = stream.tokens
        write(stream.head)
        wait_s = stream.first_token_wait()
        if wait_s:
            await asyncio.sleep(wait_s)
            if self.transport is None:
                return
        if delay_s:
            for index, token in enumerate(tokens):
                if index:
                    await asyncio.sleep(delay_s)
                write(token)
        else:
            for start in range(0, len(tokens), BATCH):
                if not self.writable.is_set():
                    await self.writable.wait()
                    if self.transport is None:
                        return
                write(b"".join(tokens[start : start + BATCH]))
        write(stream.tail)
        self.stats.open -= 1
        self.stats.completed += 1


async def serve(host: str, port: int, any_model: str | None = None) -> None:
    stats = Stats()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: UpstreamProtocol(stats, any_model), host, port, backlog=4096)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--any-model", metavar="SPEC", help="serve any other model name as this bench-… name")
    args = parser.parse_args()
    if args.any_model and MODEL.fullmatch(args.any_model) is None:
        parser.error(f"--any-model {args.any_model!r} is not bench-<tokens>-<delay_ms>[-ttft<ms>[j<ms>]]")
    try:
        with asyncio.Runner(loop_factory=new_event_loop()) as runner:
            runner.run(serve(args.host, args.port, args.any_model))
    except KeyboardInterrupt:
        sys.exit(0)


def new_event_loop():  # type: ignore[no-untyped-def]
    """uvloop's loop factory when installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


if __name__ == "__main__":
    main()
