"""The bench's own verification: a stream with one token garbled or missing, an error
frame, a missing end, or a non-200 counts as failed (so nothing looks fast by dropping text)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import openai
import pytest
from processes import KEYS, free_port, wait_until_answering
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from streamgate import sse
from streamgate.metrics import GC_PAUSE_BUCKETS, LAG_BUCKETS

from bench import stalls
from bench.client import DIALECTS, Outcome, StreamCheck, Target, due_count, run_open_loop, run_streams
from bench.mock_upstream import TOOL_CALL_ID, TOOL_NAME, expected_text, model_name, script, token_text, tool_arguments
from bench.run import (
    CLIENT_CORE,
    QUICK,
    Bench,
    Processes,
    open_loop_holds,
    percentile,
    process_tree,
    rss_kib,
    summarize_own,
    table,
    tree_rss_kib,
    verdict,
)

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
        outcomes = asyncio.run(
            run_streams(target, count=6, concurrency=3, tokens=TOKENS, delay_ms=1, timeout_s=10, fault=fault)
        )
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


def native_tool_stream(fragments: list[str]) -> bytes:
    """A streamgate body carrying one tool call: id and name first, then `fragments`."""
    first = {"index": 0, "id": TOOL_CALL_ID, "name": TOOL_NAME, "arguments": ""}
    frames = [sse.event_frame(1, b"tool_call", msgspec.json.encode(first))]
    for index, fragment in enumerate(fragments, 2):
        frames.append(sse.event_frame(index, b"tool_call", msgspec.json.encode({"index": 0, "arguments": fragment})))
    last = {"content": "", "finish_reason": "tool_calls", "model": "m", "provider": "openai", "usage": None}
    frames.append(sse.message_frame(len(fragments) + 2, msgspec.json.encode(last)))
    return b"".join(frames) + sse.DONE


def test_a_native_tool_call_stream_is_checked_by_its_arguments() -> None:
    arguments = tool_arguments(TOKENS)
    assert json.loads(arguments) == {"text": expected_text(TOKENS)}
    fragments = [arguments[i : i + 5] for i in range(0, len(arguments), 5)]
    check = StreamCheck(DIALECTS["native"])
    check.status = 200
    body = native_tool_stream(fragments)
    for start in range(0, len(body), 7):
        check.feed(body[start : start + 7])
    assert check.verdict(arguments) == ""
    assert check.frames == len(fragments)
    fragments[3] = fragments[3][:-1]
    assert native_verdict_for(native_tool_stream(fragments), arguments).startswith("text differs")


def native_verdict_for(body: bytes, expected: str) -> str:
    check = StreamCheck(DIALECTS["native"])
    check.status = 200
    check.feed(body)
    return check.verdict(expected)


def test_the_mock_tool_call_wire_is_one_fragment_per_token() -> None:
    stream, _ = script("openai", model_name(TOKENS, 0, tool=True))
    assert len(stream.tokens) == TOKENS
    fragments = [
        json.loads(_dechunk(token)[len(b"data: ") :])["choices"][0]["delta"]["tool_calls"][0] for token in stream.tokens
    ]
    assert [f["index"] for f in fragments] == [0] * TOKENS
    assert "".join(f["function"]["arguments"] for f in fragments) == tool_arguments(TOKENS)


def test_the_openai_sdk_reads_the_mock_tool_call(mock_port: int) -> None:
    """The same bytes the bench sends streamgate, parsed and accumulated by the SDK's own helper."""
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{mock_port}/v1", api_key="bench", max_retries=0)
    try:
        with client.chat.completions.stream(
            model=model_name(TOKENS, 0, tool=True), messages=[{"role": "user", "content": "call"}]
        ) as stream:
            completion = stream.get_final_completion()
    finally:
        client.close()
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls  # type: ignore[misc]
    assert (call.id, call.type, call.function.name) == (TOOL_CALL_ID, "function", TOOL_NAME)
    assert call.function.arguments == tool_arguments(TOKENS)
    assert completion.usage is not None and completion.usage.completion_tokens == TOKENS


def test_due_count_schedules_request_i_at_i_over_rate() -> None:
    assert due_count(-0.001, 100, 50) == 0
    assert due_count(0.0, 100, 50) == 1
    assert due_count(0.0099, 100, 50) == 1
    assert due_count(0.01, 100, 50) == 2
    assert due_count(0.255, 100, 50) == 26
    assert due_count(9.0, 100, 50) == 50


def test_the_open_loop_sends_at_its_rate_without_waiting(mock_port: int) -> None:
    target = Target("upstream", "127.0.0.1", mock_port, DIALECTS["openai"])

    async def run() -> tuple[list[float], float]:
        started = time.perf_counter()
        # streams of 40 ms at 200 req/s: about 8 at once (one after another would take 2 s)
        outcomes = await run_open_loop(target, rate=200, duration_s=0.25, tokens=5, delay_ms=10, timeout_s=5)
        assert [o.failure for o in outcomes] == [""] * 50
        return sorted(o.started_at for o in outcomes), time.perf_counter() - started

    due, wall = asyncio.run(run())
    assert [round(b - a, 6) for a, b in zip(due, due[1:])] == [0.005] * 49
    assert 0.245 + 0.04 < wall < 0.245 + 0.04 + 0.5


def test_open_loop_holds_within_the_added_p99_bound_and_no_failure() -> None:
    assert open_loop_holds({"upstream": (1.0, 0), "streamgate": (10.9, 0)}, "streamgate")
    assert not open_loop_holds({"upstream": (1.0, 0), "streamgate": (11.1, 0)}, "streamgate")
    assert not open_loop_holds({"upstream": (1.0, 0), "streamgate": (2.0, 1)}, "streamgate")
    assert not open_loop_holds({"upstream": (1.0, 0), "streamgate": (None, 0)}, "streamgate")


def test_verdicts_of_absolute_bounds() -> None:
    assert verdict("open_loop_max_rate_per_s", {"streamgate": 2000}, 0) == (">= 2000", "yes")
    assert verdict("open_loop_max_rate_per_s", {"streamgate": 1500}, 0) == (">= 2000", "NO")
    assert verdict("workers2_cpu_per_request_ratio", {"streamgate": 1.2}, 0) == ("<= 1.1", "NO")
    assert verdict("resume_redis_cpu_ratio", {"streamgate": None}, 0) == ("<= 2", "")


def test_verdicts_of_issue_26s_bounds_against_the_tutorial_and_the_upstream() -> None:
    both = "<= 1/4 tut and <= 0.6"
    assert verdict("added_ttft_c1_p50_ms", {"streamgate": 0.5, "tutorial": 3.0}, 0) == (both, "yes")
    assert verdict("added_ttft_c1_p50_ms", {"streamgate": 0.7, "tutorial": 3.0}, 0) == (both, "NO")  # 0.23 but +0.7
    assert verdict("added_ttft_c1_p50_ms", {"streamgate": 0.5, "tutorial": 1.5}, 0) == (both, "NO")  # +0.5 but 1/3
    assert verdict("added_ttft_c1_p50_ms", {"streamgate": 0.5}, 0) == (both, "")
    assert verdict("cpu_ms_per_short_request", {"streamgate": 0.34, "tutorial": 5.0}, 0) == ("<= 0.07 tut", "yes")
    assert verdict("cpu_ms_per_short_request", {"streamgate": 0.36, "tutorial": 5.0}, 0) == ("<= 0.07 tut", "NO")
    assert verdict("ttft_c128_p50_ms", {"streamgate": 23.0, "upstream": 4.0}, 0) == ("<= 6x up", "yes")
    assert verdict("ttft_c128_p50_ms", {"streamgate": 25.0, "upstream": 4.0}, 0) == ("<= 6x up", "NO")


def test_an_unpinned_server_runs_on_every_core_not_on_the_benchs_own() -> None:
    own = os.sched_getaffinity(0)
    processes = Processes()
    os.sched_setaffinity(0, {int(CLIENT_CORE)})  # as `python -m bench` pins itself
    try:
        process = processes.start("affinity-test", ["sleep", "9"], {}, None)
        deadline = time.monotonic() + 5  # `taskset` execs `sleep` once it has set the affinity
        while Path(f"/proc/{process.pid}/comm").read_text().strip() != "sleep" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.sched_getaffinity(process.pid) == set(range(os.cpu_count() or 1))
    finally:
        os.sched_setaffinity(0, own)
        processes.stop_all()


def test_process_tree_finds_grandchildren() -> None:
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(9)']); time.sleep(9)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 5
        while len(process_tree(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        tree = process_tree(parent.pid)
        assert tree[0] == parent.pid and len(tree) == 2
    finally:
        for pid in reversed(process_tree(parent.pid)):
            subprocess.run(["kill", str(pid)], check=False)
        parent.wait(5)


def test_tree_rss_counts_the_worker_a_server_serves_from() -> None:
    """granian serves from a worker process its main process forked: the RSS per open stream
    must be read over the whole tree, or that server's streams would cost nothing."""
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'b = bytearray(64 << 20); import time; time.sleep(9)']); "
        "time.sleep(9)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 10
        while tree_rss_kib(parent.pid) - rss_kib(parent.pid) < 64 << 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert tree_rss_kib(parent.pid) - rss_kib(parent.pid) >= 64 << 10
    finally:
        for pid in reversed(process_tree(parent.pid)):
            subprocess.run(["kill", str(pid)], check=False)
        parent.wait(5)


def test_the_table_shows_the_servers_measured_and_their_ratios() -> None:
    figures: dict[str, dict[str, float | int | None]] = {
        "cpu_ms_per_short_request": {"streamgate": 0.6, "streamgate-granian": 0.9},
    }
    header, _, row = table(figures, held=200, judged=False).splitlines()
    assert header.split() == ["figure", "upstream", "streamgate", "streamgate-granian", "gr/sg", "target", "met"]
    assert row.split() == ["cpu_ms_per_short_request", "-", "0.600", "0.900", "1.500"]
    figures["cpu_ms_per_short_request"].update(upstream=None, tutorial=3.0)
    header = table(figures, held=200, judged=False).splitlines()[0]
    servers = ["upstream", "streamgate", "streamgate-granian", "tutorial"]
    assert header.split()[1:8] == [*servers, "sg/tut", "sg/up", "gr/sg"]


def test_the_open_loop_figures_step_until_the_first_failing_rate() -> None:
    targets = [Target(name, "127.0.0.1", 1, DIALECTS["native"]) for name in ("upstream", "streamgate", "tutorial")]
    bench = Bench(QUICK, targets, ("127.0.0.1", 1))

    def streams(rate: int, name: str, ttft_ms: float, failed: int = 0) -> None:
        ok = [Outcome("", 0.0, ttft_ms / 1e3, 1.0, 8)] * 100
        bench.tally(f"open_loop_r{rate}", targets[[t.name for t in targets].index(name)]).outcomes.extend(
            ok + [Outcome("timed out", 0.0, 0.0, 5.0, 0)] * failed
        )

    for rate, upstream, ours in ((250, 0.5, 1.0), (500, 0.5, 1.2), (1000, 0.6, 1.4), (1500, 0.7, 30.0)):
        streams(rate, "upstream", upstream)
        streams(rate, "streamgate", ours)
    streams(250, "tutorial", 9.0)
    streams(500, "tutorial", 5.0, failed=1)
    figures: dict[str, dict[str, float | int | None]] = {}
    summarize_own(bench, lambda name, target, value: figures.setdefault(name, {}).__setitem__(target, value))
    assert figures["open_loop_max_rate_per_s"] == {"streamgate": 1000, "tutorial": 250}
    assert figures["open_loop_1000_added_p99_ms"] == {"streamgate": pytest.approx(0.8)}
    assert figures["open_loop_500_failed"] == {"upstream": 0, "streamgate": 0, "tutorial": 1}
    assert figures["open_loop_250_added_p99_ms"]["tutorial"] == pytest.approx(8.5)


def test_the_stalls_of_a_rate_are_read_from_two_scrapes() -> None:
    """Two expositions written by prometheus-client itself, with streamgate's buckets."""
    registry = CollectorRegistry()
    lag = Histogram(stalls.LAG, "lag", buckets=LAG_BUCKETS, registry=registry)
    pauses = Histogram(stalls.GC_PAUSE, "gc", ["generation"], buckets=GC_PAUSE_BUCKETS, registry=registry)
    lag.observe(0.2)  # before the rate: not counted
    pauses.labels("2").observe(0.03)
    before = generate_latest(registry).decode()
    for value in [0.0004] * 97 + [0.002, 0.004, 0.04]:
        lag.observe(value)
    for _ in range(10):
        pauses.labels("0").observe(0.00005)
    pauses.labels("2").observe(0.02)
    found = stalls.summary(before, generate_latest(registry).decode())
    assert found == {
        "loop_lag_timers": 100,
        "loop_lag_p99_le_ms": 5.0,  # the 99th of 100 lags: 4 ms, in the bucket up to 5 ms
        "loop_lag_max_le_ms": 50.0,
        "gc": {
            "0": {"count": 10, "total_ms": 0.5, "longest_le_ms": 0.1},
            "1": {"count": 0, "total_ms": 0.0, "longest_le_ms": None},
            "2": {"count": 1, "total_ms": 20.0, "longest_le_ms": 25.0},
        },
    }
    lag.observe(2.0)
    assert stalls.summary(before, generate_latest(registry).decode())["loop_lag_max_le_ms"] is None  # type: ignore[index]
    row = {"ttft_p99_ms": 1.5, "ttft_p999_ms": 9.25, **found}
    assert stalls.table({1000: row}).splitlines()[2].split() == (
        "1000 1.50 9.25 ≤ 5 ≤ 50 10, 0.5, ≤ 0.1 0 1, 20.0, ≤ 25".split()
    )
    assert stalls.summary(before, "") is None  # a server without the series


def test_a_metrics_scrape_that_fails_skips_the_stalls_not_the_run() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]  # nothing listens there once the socket is closed
    targets = [Target(name, "127.0.0.1", closed, DIALECTS["native"]) for name in ("upstream", "streamgate")]
    bench = Bench(QUICK, targets, ("127.0.0.1", 1))
    assert asyncio.run(bench.scrape_metrics(targets[0])) is None  # the upstream has no /metrics: not asked
    assert "open_loop_stalls" not in bench.skipped
    assert asyncio.run(bench.scrape_metrics(targets[1])) is None
    assert bench.skipped["open_loop_stalls"].startswith("GET /metrics failed")
    bench.record_stalls(500, "", None)
    assert bench.stalls == {}


def in_flight(url: str) -> float:
    scrape = httpx.get(url + "/metrics").text
    found = re.search(r'^streamgate_streams_in_flight\{provider="echo"\} (\S+)$', scrape, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


NO_GRANIAN = importlib.util.find_spec("granian") is None


@pytest.mark.skipif(NO_GRANIAN, reason="granian is not installed (pip install granian)")
def test_the_granian_target_streams_frees_a_left_stream_and_stops_on_sigterm() -> None:
    """`bench.granian_server`, the `streamgate-granian` target, over real HTTP: what the bench
    measures there is the gateway working (every frame as it is made, the upstream freed when
    a client leaves, the lifespan run), not a server failing fast."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if k not in KEYS}
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.granian_server"],
        cwd=ROOT,
        env={**environment, "PORT": str(port), "ECHO_DELAY_MS": "300", "SHUTDOWN_GRACE_S": "5"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(process, url + "/api/v1/chat/stream/health")
        body = {"provider": "echo", "messages": [{"role": "user", "content": "one two three"}]}
        with httpx.stream("POST", url + "/api/v1/chat/stream", json=body, timeout=10) as response:
            assert response.headers["server-timing"].startswith("gateway;dur=")
            first = next(response.iter_bytes())  # frame one arrives alone, 300 ms before frame two
            assert b'"content":"one "' in first and b'"two ' not in first
        left_at = time.monotonic()
        # the client left: its stream ends at once (the rest would take 600 ms), not at its end
        while in_flight(url) and time.monotonic() - left_at < 5:
            time.sleep(0.02)
        assert time.monotonic() - left_at < 0.5
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
        output = process.stdout.read().decode()  # type: ignore[union-attr]
        assert "error=client_gone" in output and "Traceback" not in output, output
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
