"""`python -m bench report` and `python -m bench compare` through the real CLI, on a live
result (samples through the real figure code) and a result shaped as `python -m bench`
writes it; the HTML rendered in a real Chromium with every chart loaded."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.live_figures import all_figures
from bench.live_result import LiveResult, Machine, Sample, Target, decoder, encoder
from bench.run import table

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
TARGETS = [Target("openai", "gpt-bench"), Target("anthropic", "claude-bench")]


def live_result(through_ms: float = 120.0, direct_ms: float = 118.0, prompts: int = 30) -> LiveResult:
    rng = random.Random(7)
    samples = []
    for target in TARGETS:
        for prompt in range(prompts):
            for mode, ttft_ms in (("through", through_ms), ("direct", direct_ms)):
                ttft = (ttft_ms + rng.uniform(-10, 10)) / 1e3
                error = "http 502 upstream_error" if mode == "through" and prompt == 3 else None
                samples.append(
                    Sample(
                        target.label,
                        mode,
                        prompt,
                        prompt * 0.5,
                        ttft + 0.4,
                        ttft,
                        64,  # type: ignore[arg-type]
                        rng.uniform(140, 160),
                        error,
                        (prompt % 2 == 0) == (mode == "through"),
                    )
                )
    figures, added = all_figures([t.label for t in TARGETS], samples)
    machine = Machine("Linux-test", "a CPU", 2, "3.11.7", {"openai": "3", "anthropic": "2", "google-genai": "3"})
    return LiveResult(
        "live",
        "python -m bench live --provider openai,anthropic",
        "2026-12-07T12:00:00Z",
        31.0,
        machine,
        "own (python -m streamgate)",
        TARGETS,
        prompts,
        1,
        False,
        None,
        samples,
        figures,
        added,
    )


def mock_result(scale: float = 1.0) -> dict[str, object]:
    """A `python -m bench` result: figure -> server -> value, as `bench/run.py` writes it."""
    servers = {"upstream": 1.0, "streamgate": 1.5, "tutorial": 4.0}
    figures: dict[str, dict[str, float | int | None]] = {}
    for concurrency, base in ((1, 0.05), (16, 0.2), (128, 2.6)):
        for q, factor in ((50, 1), (90, 1.6), (99, 2.5)):
            figures[f"ttft_c{concurrency}_p{q}_ms"] = {s: base * factor * k * scale for s, k in servers.items()}
    figures["single_stream_frames_per_s"] = {"upstream": 90000.0, "streamgate": 40000.0 / scale, "tutorial": 1500.0}
    figures["many_streams_frames_per_s"] = {"upstream": 120000.0, "streamgate": 60000.0 / scale, "tutorial": 3000.0}
    figures["cpu_us_per_frame"] = {"upstream": None, "streamgate": 4.0 * scale, "tutorial": 80.0}
    figures["cpu_ms_per_short_request"] = {"upstream": None, "streamgate": 0.35 * scale, "tutorial": 3.1}
    for rate in (250, 500, 1000, 1500):
        figures[f"open_loop_{rate}_p99_ms"] = {
            "upstream": 0.2,
            "streamgate": 0.5 * rate / 250 * scale,
            "tutorial": 5.0 * rate / 250 if rate <= 500 else None,
        }
    result = {
        "figures": figures,
        "samples": {},
        "memory": {},
        "failures": {},
        "skipped": {},
        "table": table(figures, 1000, judged=True),
        "stalls_table": "open loop, streamgate: its TTFT tail, and what held its event loop\n250 ...",
    }
    return {
        "command": "python -m bench --quick",
        "date": "2026-12-07T12:00:00Z",
        "duration_s": 180.0,
        "machine": {
            "cpu": "a CPU",
            "cores": 2,
            "kernel": "6.1",
            "python": "3.11.7",
            "openai": "3",
            "anthropic": "2",
            "google-genai": "3",
        },
        "results": {"openai": result},
    }


def bench(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *argv], cwd=ROOT, capture_output=True, text=True, check=False, timeout=60
    )


def render(page_path: Path, screenshot: str) -> list[int]:
    """Open the page in Chromium with the network off; the naturalWidth of each image."""
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            context = browser.new_context(offline=True, viewport={"width": 1200, "height": 900})
            page = context.new_page()
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            page.goto(page_path.as_uri())
            page.wait_for_load_state("load")
            widths = page.evaluate("[...document.images].map(i => i.complete ? i.naturalWidth : 0)")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
        finally:
            browser.close()
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
    return widths


needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and shutil.which("chromium") is None, reason="no Chromium at /usr/bin/chromium"
)


@needs_chromium
def test_the_live_report_renders_every_chart_offline(tmp_path: Path) -> None:
    source = tmp_path / "live.json"
    source.write_bytes(encoder.encode(live_result()))
    finished = bench("report", str(source))
    assert finished.returncode == 0, finished.stderr
    page = tmp_path / "live.html"
    text = page.read_text()
    for heading in ("TTFT p50 ms", "http 502 upstream_error: 1", "Added TTFT", "python -m bench live", "a CPU"):
        assert heading in text
    widths = render(page, "bench-live-report.png")
    assert len(widths) == len(TARGETS) + 2 and all(width > 0 for width in widths)


@needs_chromium
def test_the_mock_bench_report_draws_what_its_json_holds(tmp_path: Path) -> None:
    source = tmp_path / "20261207T120000Z.json"
    source.write_text(json.dumps(mock_result()))
    out = tmp_path / "mock.html"
    assert bench("report", str(source), "--out", str(out)).returncode == 0
    text = out.read_text()
    for title in ("streamgate bench (mock upstream)", "python -m bench --quick", "cpu_us_per_frame", "what held its"):
        assert title in text
    widths = render(out, "bench-mock-report.png")
    # TTFT at 3 concurrencies, frames/s, CPU per frame, CPU per request, the open loop
    assert len(widths) == 7 and all(width > 0 for width in widths)


def test_the_live_figures_hold_the_pairing() -> None:
    result = decoder.decode(encoder.encode(live_result(through_ms=125, direct_ms=118)))
    added = result.added_ttft[0]
    assert added.pairs == 29  # prompt 3 failed through: no pair
    assert added.ms.p50 == pytest.approx(7, abs=4)


def test_compare_flags_an_injected_live_regression(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_bytes(encoder.encode(live_result()))
    b.write_bytes(encoder.encode(live_result(through_ms=180.0)))
    same = bench("compare", str(a), str(a), "--fail-over", "1.1")
    assert same.returncode == 0, same.stdout + same.stderr
    worse = bench("compare", str(a), str(b), "--fail-over", "1.1")
    assert worse.returncode == 1, worse.stdout + worse.stderr
    flagged = [line for line in worse.stdout.splitlines() if line.rstrip().endswith("WORSE")]
    assert any(line.startswith("openai/gpt-bench through TTFT p50 ms") for line in flagged)
    assert not any(" direct TTFT" in line for line in flagged)
    assert bench("compare", str(a), str(b)).returncode == 0  # without --fail-over: the figures only


def test_compare_flags_a_mock_regression_in_either_direction(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(mock_result()))
    b.write_text(json.dumps(mock_result(scale=1.3)))
    finished = bench("compare", str(a), str(b), "--fail-over", "1.1")
    assert finished.returncode == 1
    flagged = {
        line.split()[1] + " " + line.split()[2]
        for line in finished.stdout.splitlines()
        if line.rstrip().endswith("WORSE")
    }
    assert "cpu_us_per_frame streamgate" in flagged  # lower is better, 1.3x higher
    assert "single_stream_frames_per_s streamgate" in flagged  # higher is better, 1/1.3 as high
    assert "cpu_us_per_frame tutorial" not in flagged


def test_compare_refuses_a_live_and_a_mock_result(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_bytes(encoder.encode(live_result()))
    b.write_text(json.dumps(mock_result()))
    finished = bench("compare", str(a), str(b))
    assert finished.returncode == 2 and "a live result" in finished.stderr
