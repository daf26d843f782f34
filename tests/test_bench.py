"""The bench's own verification: a stream with one token garbled or missing, an error
frame, a missing end, or a non-200 counts as failed (so nothing looks fast by dropping text)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from streamgate import sse
from bench.client import DIALECTS, StreamCheck, Target, run_streams
from bench.mock_upstream import expected_text, model_name, script, token_text
from bench.run import percentile

ROOT = Path(__file__).resolve().parent.parent
TOKENS = 20


def native_stream(texts: list[str], *, final: str = "stop", done: bool = True) -> bytes:
    """A streamgate `/api/v1/chat/stream` body carrying `texts`, one frame each."""
    frames = []
    for index, text in enumerate(texts, 1):
        chunk = {"content": text, "finish_reason": None, "model": "m", "provider": "openai", "usage": None}
        frames.append(sse.message_frame(index, msgspec.json.encode(chunk)))
    last = {"content": "", "finish_reason": final, "model": "m", "provider": "openai", "usage": None}
    frames.append(sse.message_frame(len(texts) + 1, msgspec.json.encode(last)))
    return b"".join(frames) + (sse.DONE if done else b"")


def native_verdict(body: bytes, *, status: int = 200, split: int = 7) -> str:
    """Feed `body` in pieces of `split` bytes (so UTF-8 and frames straddle reads)."""
    check = StreamCheck(DIALECTS["native"])
    check.status = status
    for start in range(0, len(body), split):
        check.feed(body[start : start + split])
    return check.verdict(expected_text(TOKENS))


def good_texts() -> list[str]:
    return [token_text(i) for i in range(TOKENS)]


def test_an_exact_stream_passes() -> None:
    assert native_verdict(native_stream(good_texts())) == ""
    assert native_verdict(native_stream(good_texts()), split=1) == ""


def test_the_vocabulary_holds_the_hard_characters() -> None:
    text = expected_text(TOKENS)
    assert "\n" in text and "\u2028" in text and "🙂" in text and "世界" in text and '"' in text


@pytest.mark.parametrize("index", [0, 5, TOKENS - 1])
def test_one_garbled_token_fails(index: int) -> None:
    texts = good_texts()
    texts[index] = texts[index][:-1] + "x"
    assert native_verdict(native_stream(texts)).startswith("text differs at character")


@pytest.mark.parametrize("index", [0, 7, TOKENS - 1])
def test_one_missing_token_fails(index: int) -> None:
    texts = good_texts()
    del texts[index]
    assert native_verdict(native_stream(texts)).startswith("text differs at character")


def test_an_error_frame_fails_even_with_the_whole_text() -> None:
    body = native_stream(good_texts(), final="error")
    body = body.replace(sse.DONE, sse.encode_event('{"error":{"type":"upstream_error"}}', event="error") + sse.DONE)
    assert native_verdict(body).startswith("error frame")


def test_a_missing_end_or_a_non_200_fails() -> None:
    assert native_verdict(native_stream(good_texts(), done=False)) == "no [DONE]"
    no_final = native_stream(good_texts()).rsplit(b"id: ", 1)[0] + sse.DONE
    assert native_verdict(no_final) == "no final frame"
    assert native_verdict(native_stream(good_texts()), status=502) == "HTTP 502"


@pytest.mark.parametrize("wire", ["openai", "anthropic", "gemini"])
def test_each_mock_wire_format_reads_back_exactly(wire: str) -> None:
    stream, _ = script(wire, model_name(TOKENS, 0))
    check = StreamCheck(DIALECTS[wire])
    check.status = 200
    for frame in [stream.head, *stream.tokens, stream.tail]:
        check.feed(_dechunk(frame))
    assert check.verdict(expected_text(TOKENS)) == ""
    assert check.frames == TOKENS


def _dechunk(raw: bytes) -> bytes:
    """The data of the HTTP/1.1 chunks in `raw` (after any response head)."""
    raw = raw.split(b"\r\n\r\n", 1)[1] if raw.startswith(b"HTTP/") else raw
    out = b""
    while raw:
        size, _, raw = raw.partition(b"\r\n")
        length = int(size, 16)
        out, raw = out + raw[:length], raw[length + 2 :]
    return out


@pytest.fixture(scope="module")
def mock_port() -> Iterator[int]:
    process = subprocess.Popen([sys.executable, "-m", "bench.mock_upstream"], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        yield int(process.stdout.readline().split()[1])  # type: ignore[union-attr]
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize("wire", ["openai", "anthropic", "gemini"])
def test_the_load_client_counts_faults_over_real_http(mock_port: int, wire: str) -> None:
    target = Target("upstream", "127.0.0.1", mock_port, DIALECTS[wire])

    def run(fault: str) -> list[str]:
        outcomes = asyncio.run(run_streams(target, count=6, concurrency=3, tokens=TOKENS, delay_ms=1,
                                           timeout_s=10, fault=fault))
        return [outcome.failure for outcome in outcomes]

    assert run("") == [""] * 6
    assert all(failure.startswith("text differs") for failure in run("drop3"))
    assert all(failure.startswith("text differs") for failure in run("garble11"))


def test_a_timeout_fails(mock_port: int) -> None:
    target = Target("upstream", "127.0.0.1", mock_port, DIALECTS["openai"])
    outcomes = asyncio.run(run_streams(target, count=2, concurrency=2, tokens=TOKENS, delay_ms=100, timeout_s=0.3))
    assert [outcome.failure for outcome in outcomes] == ["timed out", "timed out"]


def test_percentile() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0], 50) == 1.5
    assert percentile([], 50) is None
