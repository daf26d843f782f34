"""A real `python server.py` shutting down with answers in flight: when `SHUTDOWN_GRACE_S`
runs out, or at once on a second signal, every open stream gets the contract's failure end
(`shutting_down`) before its connection closes, a request not yet answered gets a 503, and
the log holds one line per cut request and no traceback. And, in-process, the pipeline's
part of it: `run_chat` cancelled by the server (not by the client leaving) still answers,
and `requests_ended_at_exit` cuts and awaits every request still open."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from streamgate import sse
from streamgate.chat_types import ChatMessage, ChatRequest
from streamgate.dialects.native import NativeFrames, send_answer
from streamgate.pipeline import Call, requests_ended_at_exit, run_chat, send_error
from streamgate.providers.echo import EchoAdapter
from test_process import server_process

WORDS = " ".join(f"w{i}" for i in range(200))
BODY = {"provider": "echo", "messages": [{"role": "user", "content": WORDS}]}
MESSAGE = "the server is shutting down; the answer was cut off before its end"


def native_stream(url: str) -> bytes:
    with httpx.stream("POST", url + "/api/v1/chat/stream", json=BODY, timeout=30) as response:
        assert response.status_code == 200
        return b"".join(response.iter_bytes())


def native_answer(url: str) -> httpx.Response:
    return httpx.post(url + "/api/v1/chat", json=BODY, timeout=30)


def sdk_stream(url: str) -> tuple[str, openai.APIError]:
    """The text the openai SDK read on `/v1` before it raised, and what it raised."""
    text = ""
    with openai.OpenAI(base_url=url + "/v1", api_key="-", max_retries=0) as client:
        stream = client.chat.completions.create(model="echo/echo", messages=BODY["messages"], stream=True)
        try:
            for chunk in stream:
                text += chunk.choices[0].delta.content or ""
        except openai.APIError as error:
            return text, error
    raise AssertionError("the stream ended without an error")


def sdk_answer(url: str) -> openai.APIStatusError:
    """What the openai SDK raised for a `/v1` answer (not streamed) cut before it was sent."""
    with openai.OpenAI(base_url=url + "/v1", api_key="-", max_retries=0) as client:
        try:
            client.chat.completions.create(model="echo/echo", messages=BODY["messages"])
        except openai.APIStatusError as error:
            return error
    raise AssertionError("the answer came whole")


def in_flight(url: str) -> float:
    scrape = httpx.get(url + "/metrics").text
    found = re.search(r'^streamgate_streams_in_flight\{provider="echo"\} (\S+)$', scrape, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def start_requests(url: str, requests: list[Callable[[str], Any]]) -> tuple[ThreadPoolExecutor, list[Future[Any]]]:
    """Start `requests` in threads; return once the server is answering all of them."""
    pool = ThreadPoolExecutor(len(requests))
    futures = [pool.submit(request, url) for request in requests]
    deadline = time.monotonic() + 10
    while in_flight(url) < len(requests):
        assert time.monotonic() < deadline, "the requests did not reach the server"
        time.sleep(0.05)
    time.sleep(0.3)  # a few words each
    return pool, futures


def check_native_cut(raw: bytes) -> None:
    events = [e for e in sse.Decoder().feed(raw) if isinstance(e, sse.Event)]
    *words, final, error, done = events
    assert (
        words
        and "".join(json.loads(e.data)["content"] for e in words)
        == WORDS[: len("".join(json.loads(e.data)["content"] for e in words))]
    )
    assert json.loads(final.data) == {
        "content": "",
        "finish_reason": "error",
        "model": "echo",
        "provider": "echo",
        "usage": None,
    }
    assert (error.event, json.loads(error.data)) == ("error", {"error": {"type": "shutting_down", "message": MESSAGE}})
    assert [int(e.id) for e in (*words, final, error)] == list(range(1, len(words) + 3))
    assert done.data == "[DONE]" and raw.endswith(b"data: [DONE]\n\n")


def check_sdk_cut(result: tuple[str, openai.APIError]) -> None:
    text, error = result
    assert text and WORDS.startswith(text)
    assert type(error) is openai.APIError
    assert error.message == MESSAGE
    assert error.body == {"message": MESSAGE, "type": "api_error", "param": None, "code": "shutting_down"}


def check_log(log: str, cut: int) -> None:
    assert "Traceback" not in log and "CancelledError" not in log, log
    lines = [line for line in log.splitlines() if "error=shutting_down" in line]
    assert len(lines) == cut, log
    assert all(" WARNING streamgate.access: POST " in line for line in lines), log


def test_the_grace_running_out_ends_every_open_answer_in_words(tmp_path: Path) -> None:
    with server_process(tmp_path, ECHO_DELAY_MS="100", SHUTDOWN_GRACE_S="1") as (process, url):
        pool, (native, sdk, answer, sdk_whole) = start_requests(
            url, [native_stream, sdk_stream, native_answer, sdk_answer]
        )
        signalled_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        check_native_cut(native.result(10))
        check_sdk_cut(sdk.result(10))
        response = answer.result(10)
        assert 1 <= time.monotonic() - signalled_at < 5
        assert response.status_code == 503
        assert response.json() == {"error": {"type": "shutting_down", "message": MESSAGE}}
        error = sdk_whole.result(10)
        assert type(error) is openai.InternalServerError and error.status_code == 503
        assert error.body == {"message": MESSAGE, "type": "api_error", "param": None, "code": "shutting_down"}
        assert process.wait(10) in (0, -signal.SIGTERM)
        pool.shutdown()
        log = process.stdout.read().decode()  # type: ignore[union-attr]
    check_log(log, cut=4)
    assert "POST /api/v1/chat 503 provider=echo model=echo" in log
    assert "POST /v1/chat/completions 503 provider=echo model=echo" in log


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_second_signal_cuts_at_once(tmp_path: Path, second: signal.Signals) -> None:
    with server_process(tmp_path, ECHO_DELAY_MS="100", SHUTDOWN_GRACE_S="30") as (process, url):
        pool, (native, sdk) = start_requests(url, [native_stream, sdk_stream])
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        signalled_at = time.monotonic()
        process.send_signal(second)
        check_native_cut(native.result(10))
        check_sdk_cut(sdk.result(10))
        assert time.monotonic() - signalled_at < 2
        assert process.wait(10) in (0, -signal.SIGTERM)
        pool.shutdown()
        log = process.stdout.read().decode()  # type: ignore[union-attr]
    check_log(log, cut=2)


# --- in-process: the pipeline's part -------------------------------------------------


class Exchange:
    """One request's ASGI side: a client that never leaves (or leaves on `leave()`), and
    what the app sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.left = asyncio.Event()
        self.first_body = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body":
            self.first_body.set()

    def chat(self, streaming: bool) -> asyncio.Task[None]:
        request = ChatRequest(messages=[ChatMessage(role="user", content=WORDS)], provider="echo")
        adapter = EchoAdapter(5)
        call = Call(
            provider="echo",
            model="echo",
            open=lambda: adapter.stream_chat(request),
            frames=NativeFrames("echo", "echo"),
            streaming=streaming,
            send_answer=send_answer,
        )
        return asyncio.get_running_loop().create_task(
            run_chat(call, self.receive, self.send, 60, send_error=send_error)
        )

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


@pytest.mark.anyio
async def test_a_stream_cancelled_by_the_server_ends_in_words() -> None:
    exchange = Exchange()
    task = exchange.chat(streaming=True)
    await exchange.first_body.wait()
    task.cancel()
    await task  # ends normally: the cancellation was answered
    assert not task.cancelled() and task.cancelling() == 0
    assert exchange.sent[0]["status"] == 200 and exchange.sent[-1]["more_body"] is False
    check_native_cut(exchange.body)


@pytest.mark.anyio
async def test_an_answer_cancelled_by_the_server_before_it_was_sent_is_a_503() -> None:
    exchange = Exchange()
    task = exchange.chat(streaming=False)
    await asyncio.sleep(0.02)
    task.cancel()
    await task
    assert exchange.sent[0]["status"] == 503
    assert json.loads(exchange.body) == {"error": {"type": "shutting_down", "message": MESSAGE}}


@pytest.mark.anyio
async def test_a_client_that_left_gets_nothing_more() -> None:
    exchange = Exchange()
    task = exchange.chat(streaming=True)
    await exchange.first_body.wait()
    exchange.left.set()
    await task
    assert b"shutting_down" not in exchange.body and not exchange.body.endswith(b"[DONE]\n\n")


@pytest.mark.anyio
async def test_the_app_exit_cuts_and_awaits_every_open_request() -> None:
    exchanges = [Exchange(), Exchange()]
    async with requests_ended_at_exit():
        stream, answer = exchanges[0].chat(streaming=True), exchanges[1].chat(streaming=False)
        await exchanges[0].first_body.wait()
        answer.cancel()  # as uvicorn does at the end of its grace: not cancelled twice
    assert stream.done() and answer.done() and not answer.cancelled()
    check_native_cut(exchanges[0].body)
    assert exchanges[1].sent[0]["status"] == 503
