"""A real `python server.py` shutting down with answers in flight: when `SHUTDOWN_GRACE_S`
runs out, or at once on a second signal, every open stream gets the contract's failure end
(`shutting_down`) before its connection closes, a request not yet answered gets a 503, and
the log holds one line per cut request and no traceback."""

from __future__ import annotations

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
    assert words and "".join(json.loads(e.data)["content"] for e in words) == WORDS[:len("".join(
        json.loads(e.data)["content"] for e in words))]
    assert json.loads(final.data) == {"content": "", "finish_reason": "error", "model": "echo",
                                      "provider": "echo", "usage": None}
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
            url, [native_stream, sdk_stream, native_answer, sdk_answer])
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
