"""The house: importing the core loads no SDK, nothing happens at import, each module has
one import identity, and the plain and resumable paths end a request the same way."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import streamgate
from streamgate.app import create_app
from support import BrokenAdapter, serve, settings

ROOT = Path(streamgate.__file__).resolve().parent
SDKS = ("openai", "anthropic", "google.genai")


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    "module", ["streamgate.pipeline", "streamgate.resume", "streamgate.dialects", "streamgate.server", "streamgate.app"]
)
def test_importing_the_core_imports_no_sdk(module: str) -> None:
    result = run_python(f"import {module}")
    assert result.returncode == 0, result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert not [name for name in imported if name.startswith(SDKS)]


def test_importing_the_server_with_a_bad_setting_does_nothing() -> None:
    result = run_python("import streamgate.server", PORT="abc")
    assert result.returncode == 0, result.stderr


def test_a_process_with_a_bad_setting_stops_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamgate"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PORT": "abc"},
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "streamgate: cannot start: PORT='abc' is not valid: expected a whole number from 0 to 65535 (default 8000)"
    ]


def test_tests_collect_with_a_bad_setting_in_the_environment() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests/test_sse.py"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PORT": "abc"},
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_command_takes_the_options_of_a_server() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamgate", "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0
    assert all(option in result.stdout for option in ("--version", "--host", "--port", "--workers", "--config"))
    version = subprocess.run(
        [sys.executable, "-m", "streamgate", "--version"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert version.returncode == 0 and version.stdout.startswith("streamgate ")


def test_every_module_is_loaded_once() -> None:
    """No file of the package is loaded twice, as two modules under two names (two
    `GatewayError` classes, a duplicate Prometheus metric)."""
    by_file: dict[str, dict[int, str]] = {}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve().is_relative_to(ROOT) and "tests" not in Path(file).parts:
            by_file.setdefault(str(Path(file).resolve()), {})[id(module)] = name
    assert {file: sorted(names.values()) for file, names in by_file.items() if len(names) > 1} == {}


def access_lines(caplog: pytest.LogCaptureFixture, count: int) -> list[str]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [r.getMessage() for r in caplog.records if r.name == "streamgate.access"]
        if len(lines) >= count:
            return lines
        time.sleep(0.01)
    raise AssertionError(f"expected {count} request log lines")


@pytest.mark.parametrize(
    ("path", "model", "provider"),
    [
        ("/api/v1/chat/stream", None, "openai"),  # not configured: 401 provider_auth_error
        ("/api/v1/chat/stream", None, "broken"),  # failed opening after retries: 503
        ("/v1/chat/completions", "openai/gpt-4o", None),  # not configured: 400 on /v1
        ("/v1/chat/completions", "broken/broken-1", None),
    ],
)
def test_the_plain_and_resumable_paths_log_the_same_status(
    path: str, model: str | None, provider: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streamgate.access")
    from streamgate.providers import build_adapters

    adapters = {**build_adapters(settings()), "broken": BrokenAdapter(open_failures=5)}
    with serve(create_app(settings(), adapters)) as url:
        statuses = []
        for resumable in (False, True):
            body: dict[str, object] = {
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
                "resumable": resumable,
            }
            if model:
                body["model"] = model
            if provider:
                body["provider"] = provider
            if "broken" in (model or provider or ""):
                adapters["broken"] = BrokenAdapter(open_failures=5)
            statuses.append(httpx.post(url + path, json=body, timeout=30).status_code)
        plain, resumable_line = access_lines(caplog, 2)
    assert statuses[0] == statuses[1] >= 400
    status_of = [line.split(" ")[2] for line in (plain, resumable_line)]
    assert status_of == [str(statuses[0])] * 2, (plain, resumable_line)
