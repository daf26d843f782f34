"""The request log: one line per chat request when it ends (`ACCESS_LOG`), on both
dialects, streamed or not, answered or refused; nothing per frame; none with it off."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import sys
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from streamgate.app import create_app
from streamgate.providers import build_adapters
from streamgate.server import LINE_FORMAT, BatchedStreamHandler, LineFormatter
from support import gateway, serve, settings

HELLO = [{"role": "user", "content": "Hello there, log"}]
NUMBER = r"\d+\.\d{3}s"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with gateway(echo_delay_ms=1.0) as url:
        yield url


def lines_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "streamgate.access"]


def wait_for_lines(caplog: pytest.LogCaptureFixture, count: int) -> list[str]:
    """The log lines, once `count` are there (a line is written after the response's end)."""
    deadline = time.monotonic() + 5
    while len(lines_of(caplog)) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return lines_of(caplog)


def test_a_stream_and_an_answer_each_log_one_line(base_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamgate.access")
    body = {"provider": "echo", "messages": HELLO}
    assert httpx.post(base_url + "/api/v1/chat/stream", json=body).status_code == 200
    assert httpx.post(base_url + "/api/v1/chat", json=body).status_code == 200
    with openai.OpenAI(base_url=base_url + "/v1", api_key="-", max_retries=0) as client:
        text = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in client.chat.completions.create(model="echo/echo", messages=HELLO, stream=True)
            if chunk.choices
        )
        assert text == HELLO[0]["content"]
    stream, answer, sdk = wait_for_lines(caplog, 3)
    assert re.fullmatch(
        rf"POST /api/v1/chat/stream 200 provider=echo model=echo ttft={NUMBER} "
        rf"duration={NUMBER} tokens=3\+3",
        stream,
    ), stream
    assert re.fullmatch(
        rf"POST /api/v1/chat 200 provider=echo model=echo ttft=- duration={NUMBER} tokens=3\+3", answer
    ), answer
    assert re.fullmatch(
        rf"POST /v1/chat/completions 200 provider=echo model=echo ttft={NUMBER} "
        rf"duration={NUMBER} tokens=3\+3",
        sdk,
    ), sdk
    assert all(record.levelno == logging.INFO for record in caplog.records if record.name == "streamgate.access")


def test_a_resumable_stream_logs_its_stream_id_when_its_generation_ends(
    base_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streamgate.access")
    body = {"provider": "echo", "messages": HELLO, "resumable": True}
    response = httpx.post(base_url + "/api/v1/chat/stream", json=body)
    assert response.status_code == 200
    stream_id = response.headers["x-stream-id"]
    (line,) = wait_for_lines(caplog, 1)
    assert re.fullmatch(
        rf"POST /api/v1/chat/stream 200 provider=echo model=echo ttft={NUMBER} "
        rf"duration={NUMBER} tokens=3\+3 stream={re.escape(stream_id)}",
        line,
    ), line


def test_refused_requests_log_the_status_each_dialect_sent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamgate.access")
    with serve(create_app(settings())) as url:  # every provider, none configured but echo
        assert httpx.post(url + "/api/v1/chat/stream", json={"provider": "nope", "messages": HELLO}).status_code == 422
        assert (
            httpx.post(url + "/api/v1/chat/stream", json={"provider": "openai", "messages": HELLO}).status_code == 401
        )
        with openai.OpenAI(base_url=url + "/v1", api_key="-", max_retries=0) as client:
            for model in ("echo/other", "anthropic/claude-x"):
                with pytest.raises(openai.BadRequestError):
                    client.chat.completions.create(model=model, messages=HELLO)
        lines = wait_for_lines(caplog, 4)
    expected = [
        r"POST /api/v1/chat/stream 422 provider=- model=- error=unknown_provider",
        rf"POST /api/v1/chat/stream 401 provider=openai model=gpt-4o ttft=- duration={NUMBER} tokens=- "
        r"error=provider_auth_error",
        rf"POST /v1/chat/completions 400 provider=echo model=other ttft=- duration={NUMBER} tokens=- "
        r"error=model_not_supported",
        rf"POST /v1/chat/completions 400 provider=anthropic model=claude-x ttft=- duration={NUMBER} tokens=- "
        r"error=provider_auth_error",
    ]
    assert len(lines) == len(expected)
    for line, pattern in zip(lines, expected):
        assert re.fullmatch(pattern, line), line


def test_a_client_that_leaves_is_logged_as_gone(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamgate.access")
    words = " ".join(f"w{i}" for i in range(100))
    with serve(create_app(settings(echo_delay_ms=50.0))) as url:
        body = {"provider": "echo", "messages": [{"role": "user", "content": words}]}
        with httpx.stream("POST", url + "/api/v1/chat/stream", json=body) as response:
            next(response.iter_bytes())
        (line,) = wait_for_lines(caplog, 1)
    assert re.fullmatch(
        rf"POST /api/v1/chat/stream 200 provider=echo model=echo ttft={NUMBER} "
        rf"duration={NUMBER} tokens=- error=client_gone",
        line,
    ), line


def test_access_log_off_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamgate.access")
    with serve(create_app(settings(access_log=False), build_adapters(settings()))) as url:
        assert httpx.post(url + "/api/v1/chat/stream", json={"provider": "echo", "messages": HELLO}).status_code == 200
        assert httpx.post(url + "/api/v1/chat", json={"provider": "nope", "messages": HELLO}).status_code == 422
    assert lines_of(caplog) == []  # the server has ended: every request is done


@pytest.mark.parametrize("created", [0.0, 1_765_000_000.25, 1_765_000_000.999, 1_765_000_001.0005, 1_900_000_000.5])
def test_the_server_formatter_writes_the_time_as_logging_does(created: float) -> None:
    ours, standard = LineFormatter("%(asctime)s %(message)s"), logging.Formatter("%(asctime)s %(message)s")
    for when in (created, created + 0.5, created + 1.0):  # within the second it keeps, and the next
        record = logging.LogRecord("streamgate.access", logging.INFO, __file__, 1, "POST /v1", None, None)
        record.created, record.msecs = when, (when - int(when)) * 1000
        assert ours.format(record) == standard.format(record)


def test_the_server_formatter_writes_its_line_as_logging_does() -> None:
    ours, standard = LineFormatter(), logging.Formatter(LINE_FORMAT)
    try:
        raise ValueError("boom")
    except ValueError:
        failure = sys.exc_info()
    for args, exc_info in ((None, None), (("x", 2), None), (None, failure)):
        message = "POST /v1 %s %d" if args else "POST /v1 200 provider=echo"
        record = logging.LogRecord("streamgate.access", logging.WARNING, __file__, 1, message, args, exc_info)
        assert ours.format(record) == standard.format(record)


class CountedWrites(io.StringIO):
    """A stream that counts its writes."""

    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@contextlib.contextmanager
def batched_logger(name: str, line_format: str) -> Iterator[tuple[logging.Logger, BatchedStreamHandler, CountedWrites]]:
    """A logger of its own writing through the server's handler to a `CountedWrites`."""
    stream = CountedWrites()
    handler = BatchedStreamHandler(stream)
    handler.setFormatter(logging.Formatter(line_format))
    logger = logging.getLogger(name)
    logger.propagate, logger.level = False, logging.INFO
    logger.addHandler(handler)
    try:
        yield logger, handler, stream
    finally:
        logger.removeHandler(handler)


def test_the_server_handler_writes_a_loops_lines_together_and_warnings_at_once() -> None:
    with batched_logger("streamgate.test-batched", "%(levelname)s %(message)s") as (logger, handler, stream):
        logger.info("before any loop")  # at once: no loop would flush it
        assert (stream.getvalue(), stream.writes) == ("INFO before any loop\n", 1)

        async def log_a_burst() -> None:
            for n in range(100):
                logger.info("request %d", n)
            assert stream.writes == 1  # held back
            await asyncio.sleep(BatchedStreamHandler.FLUSH_S * 2)
            assert stream.writes == 2  # the hundred lines in one write
            logger.info("one more")
            logger.warning("a warning")  # at once, after what waited
            assert stream.writes == 3
            logger.info("last")

        asyncio.run(log_a_burst())
        handler.flush()  # as the app's shutdown does
        lines = stream.getvalue().splitlines()
        assert lines == [
            "INFO before any loop",
            *(f"INFO request {n}" for n in range(100)),
            "INFO one more",
            "WARNING a warning",
            "INFO last",
        ]


def test_the_server_handler_writes_at_once_once_the_loop_that_would_flush_has_stopped() -> None:
    with batched_logger("streamgate.test-batched-stopped", "%(message)s") as (logger, _, stream):

        async def log_and_leave() -> None:
            logger.info("in the loop")  # waits for a flush the loop will never run

        asyncio.run(log_and_leave())
        assert stream.writes == 0
        logger.info("after the loop")  # no loop: what waited and this line, at once
        assert (stream.getvalue(), stream.writes) == ("in the loop\nafter the loop\n", 1)
