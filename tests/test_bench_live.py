"""`python -m bench live` end to end: the loopback mock stands in for all four providers
(their real wire formats, usage included, a scripted time to first token), a real
`python -m streamgate` in between, the real SDKs on the direct side, the real CLI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import free_port, wait_until_answering

from bench.live import Wanted, wanted_targets
from bench.live_result import LiveResult, TargetFigures, decoder

ROOT = Path(__file__).resolve().parent.parent
SCRIPTED_TTFT_MS = 200  # long enough that a busy machine's few ms stay inside the 10%
MOCK_SPEC = f"bench-16-2-ttft{SCRIPTED_TTFT_MS}j5"
LLAMA = "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8"
MODELS = f"openai/gpt-bench,anthropic/claude-bench,gemini/gemini-2.5-flash,llama4/{LLAMA}"
TARGETS = ("openai/gpt-bench", "anthropic/claude-bench", "gemini/gemini-2.5-flash", f"llama4/{LLAMA}")
PROMPTS = [
    "Say hello.",
    "Name a colour.",
    "This one fails: bench-status-500",
    "Count to three.",
    "A longer prompt. " * 40,
    "One more.",
    "The last.",
]
FAILING_PROMPT = 2
DIRECT_500 = {
    "openai/gpt-bench": "InternalServerError 500",
    "anthropic/claude-bench": "InternalServerError 500",
    "gemini/gemini-2.5-flash": "ServerError 500",
    f"llama4/{LLAMA}": "InternalServerError 500",
}


@pytest.fixture(scope="module")
def mock_env() -> Iterator[dict[str, str]]:
    """The mock upstream, and the environment pointing every provider at it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.mock_upstream", "--any-model", MOCK_SPEC], cwd=ROOT, stdout=subprocess.PIPE
    )
    try:
        port = int(process.stdout.readline().split()[1])  # type: ignore[union-attr]
        mock = f"http://127.0.0.1:{port}"
        yield {
            **os.environ,
            "OPENAI_BASE_URL": f"{mock}/v1",
            "OPENAI_API_KEY": "x",
            "TOGETHER_BASE_URL": f"{mock}/v1",
            "TOGETHER_API_KEY": "x",
            "ANTHROPIC_BASE_URL": mock,
            "ANTHROPIC_API_KEY": "x",
            "GEMINI_BASE_URL": mock,
            "GEMINI_API_KEY": "x",
            "UPSTREAM_MAX_RETRIES": "0",
            "MODEL_CATALOG_REFRESH_S": "0",
            "SHUTDOWN_GRACE_S": "1",
            "PYTHONUNBUFFERED": "1",
        }
    finally:
        process.kill()
        process.wait(10)


@pytest.fixture(scope="module")
def gateway(mock_env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamgate"],
        env={**mock_env, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until_answering(process, f"http://127.0.0.1:{port}/api/v1/chat/stream/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(15)


@pytest.fixture(scope="module")
def live_run(
    mock_env: dict[str, str], gateway: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, LiveResult]:
    """One `bench live` over the four providers, 7 prompts each (one answered with a 500)."""
    out = tmp_path_factory.mktemp("live")
    prompts = out / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    argv = [
        "live",
        "--provider",
        "openai,anthropic,gemini,llama4",
        "--model",
        MODELS,
        "--requests",
        str(len(PROMPTS)),
        "--prompts",
        str(prompts),
        "--gateway",
        gateway,
        "--out",
        str(out),
    ]
    finished = subprocess.run(
        [sys.executable, "-m", "bench", *argv], cwd=ROOT, env=mock_env, capture_output=True, check=False, timeout=90
    )
    assert finished.returncode == 0, finished.stderr.decode()
    path = next(out.glob("live-*.json"))
    return path, decoder.decode(path.read_bytes())


def figures(result: LiveResult, target: str, mode: str) -> TargetFigures:
    return next(f for f in result.figures if f.target == target and f.mode == mode)


def test_the_p50_ttft_is_the_scripted_one_both_ways(live_run: tuple[Path, LiveResult]) -> None:
    _, result = live_run
    assert [t.label for t in result.targets] == list(TARGETS)
    for target in TARGETS:
        for mode in ("through", "direct"):
            figure = figures(result, target, mode)
            assert figure.ok == len(PROMPTS) - 1, (target, mode, figure.errors)
            assert figure.ttft_ms.p50 == pytest.approx(SCRIPTED_TTFT_MS, rel=0.10), (target, mode)
            # 16 tokens 2 ms apart: at most 500 tokens/s after the first, from the usage of each wire
            rate = figure.tokens_per_s.p50
            assert rate is not None and 150 < rate <= 520, (target, mode)
    assert all(s.output_tokens == 16 for s in result.samples if s.error is None)


def test_upstream_errors_are_counted_by_type(live_run: tuple[Path, LiveResult]) -> None:
    _, result = live_run
    for target in TARGETS:
        assert figures(result, target, "through").errors == {"http 502 upstream_error": 1}
        assert figures(result, target, "direct").errors == {DIRECT_500[target]: 1}
    failed = {(s.target, s.mode) for s in result.samples if s.error is not None}
    assert len(failed) == 8
    assert {s.prompt for s in result.samples if s.error is not None} == {FAILING_PROMPT}


def test_added_ttft_is_paired_per_prompt(live_run: tuple[Path, LiveResult]) -> None:
    _, result = live_run
    for added in result.added_ttft:
        mine = [s for s in result.samples if s.target == added.target]
        ttft = {(s.mode, s.prompt): s.ttft_s * 1e3 for s in mine if s.ttft_s is not None and s.error is None}
        expected = [ttft[("through", p)] - ttft[("direct", p)] for p in range(len(PROMPTS)) if p != FAILING_PROMPT]
        assert added.pairs == len(PROMPTS) - 1
        assert added.values_ms == pytest.approx(expected)
        # the order alternates per prompt: through first on even prompts, direct first on odd ones
        for sample in mine:
            assert sample.went_first == ((sample.prompt % 2 == 0) == (sample.mode == "through"))


def test_the_html_report_is_written_next_to_the_json(live_run: tuple[Path, LiveResult]) -> None:
    path, _ = live_run
    page = path.with_suffix(".html").read_text()
    assert page.count('src="data:image/png;base64,') == len(TARGETS) + 2
    assert "http://" not in page.replace(live_run[1].gateway, "") and "https://" not in page


def test_ctrl_c_writes_what_was_measured(mock_env: dict[str, str], tmp_path: Path) -> None:
    """Its own gateway this time (no `--gateway`); SIGINT mid-run: a valid partial JSON and HTML."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench",
            "live",
            "--provider",
            "openai",
            "--model",
            "gpt-bench",
            "--requests",
            "200",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=mock_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stderr.readline().decode()  # type: ignore[union-attr]
            done = re.match(r"live: (\d+)/400 requests", line)
            assert line or process.poll() is None, "bench live ended before any progress"
            if done and int(done.group(1)) >= 6:
                break
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    result = decoder.decode(next(tmp_path.glob("live-*.json")).read_bytes())
    assert result.interrupted and result.stopped_by == "SIGINT"
    assert 6 <= len(result.samples) < 400
    assert all(s.error is None for s in result.samples)
    assert figures(result, "openai/gpt-bench", "through").ok >= 3
    assert "interrupted (Ctrl-C)" in next(tmp_path.glob("live-*.html")).read_text()
    assert (
        not list(tmp_path.glob("*.gateway.log"))
        or "Finished server process" in next(tmp_path.glob("*.gateway.log")).read_text()
    )


def test_the_time_limit_bounds_the_run(mock_env: dict[str, str], gateway: str, tmp_path: Path) -> None:
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "live",
            "--provider",
            "openai",
            "--model",
            "gpt-bench",
            "--requests",
            "100",
            "--concurrency",
            "2",
            "--time-limit",
            "0.5",
            "--gateway",
            gateway,
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=mock_env,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert finished.returncode == 0, finished.stderr.decode()
    result = decoder.decode(next(tmp_path.glob("live-*.json")).read_bytes())
    assert result.stopped_by == "time limit" and not result.interrupted
    assert 2 <= len(result.samples) < 20 and all(s.error is None for s in result.samples)


def test_models_name_targets_per_provider_or_for_all() -> None:
    both = wanted_targets(["openai", "llama4"], [])
    assert both == [Wanted("openai", None), Wanted("llama4", None)]
    assert wanted_targets(["openai", "gemini"], ["m1"]) == [Wanted("openai", "m1"), Wanted("gemini", "m1")]
    assert wanted_targets(["openai", "llama4"], ["openai/gpt-x", f"llama4/{LLAMA}", "route:fast"]) == [
        Wanted("openai", "gpt-x"),
        Wanted("llama4", LLAMA),
        Wanted(None, None, "fast"),
    ]
    with pytest.raises(ValueError, match="expected one of"):
        wanted_targets(["mistral"], [])
