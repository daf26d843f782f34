"""`python server.py` as a newcomer and an operator run it: no keys, SIGTERM, bad settings."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from processes import KEYS, ROOT, gateways
from streamgate import sse
from streamgate.settings import Settings, SettingsError


@contextmanager
def server_process(tmp_path: Path, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`python server.py` from a directory without `.env`, with no provider keys."""
    with gateways(tmp_path, 1, **env) as [(process, url)]:
        yield process, url


def test_runs_with_no_keys_and_echo_streams(tmp_path: Path) -> None:
    with server_process(tmp_path, ECHO_DELAY_MS="1") as (_, url):
        health = httpx.get(url + "/api/v1/chat/stream/health").json()
        configured = {name: entry["configured"] for name, entry in health["providers"].items()}
        assert configured == {"openai": False, "llama4": False, "anthropic": False, "gemini": False, "echo": True}
        body = {"provider": "echo", "messages": [{"role": "user", "content": "Hello there"}]}
        response = httpx.post(url + "/api/v1/chat/stream", json=body)
        events = [e for e in sse.Decoder().feed(response.content) if isinstance(e, sse.Event)]
        assert [json.loads(e.data)["content"] for e in events[:-1]] == ["Hello ", "there", ""]
        assert events[-1].data == "[DONE]"
        # under uvloop too, the lag timer runs and the collections are timed
        deadline = time.monotonic() + 10
        while not all(count > 0 for count in stall_counts(url)):
            assert time.monotonic() < deadline, f"no lag timer run or no collection seen: {stall_counts(url)}"
            time.sleep(0.05)


def stall_counts(url: str) -> tuple[float, float]:
    """The lag timer's runs and the generation-0 collections, from `/metrics`."""
    scrape = httpx.get(url + "/metrics").text
    lag = re.search(r"^streamgate_event_loop_lag_seconds_count (\S+)$", scrape, re.M)
    young = re.search(r'^streamgate_gc_pause_seconds_count\{generation="0"\} (\S+)$', scrape, re.M)
    return float(lag.group(1)) if lag else 0.0, float(young.group(1)) if young else 0.0


def test_sigterm_lets_the_streams_in_flight_finish(tmp_path: Path) -> None:
    with server_process(tmp_path, ECHO_DELAY_MS="150", SHUTDOWN_GRACE_S="10") as (process, url):
        words = " ".join(f"w{i}" for i in range(10))
        body = {"provider": "echo", "messages": [{"role": "user", "content": words}]}
        with httpx.stream("POST", url + "/api/v1/chat/stream", json=body, timeout=10) as response:
            chunks = response.iter_bytes()
            received = next(chunks)
            process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            try:  # no new requests once the shutdown began
                httpx.get(url + "/api/v1/chat/stream/health", timeout=1)
                refused = False
            except httpx.TransportError:
                refused = True
            received += b"".join(chunks)
        assert refused
        events = [e for e in sse.Decoder().feed(received) if isinstance(e, sse.Event)]
        assert "".join(json.loads(e.data)["content"] for e in events[:-1]) == words
        assert events[-1].data == "[DONE]"
        # uvicorn re-raises the signal once the graceful shutdown is complete
        assert process.wait(10) in (0, -signal.SIGTERM)
        assert b"Finished server process" in process.stdout.read()  # type: ignore[union-attr]


BAD_SETTINGS = {  # variable, value → the one line a server started with it prints
    ("PORT", "abc"): "PORT='abc' is not valid: expected a whole number from 0 to 65535 (default 8000)",
    ("MAX_BODY_BYTES", "lots"): "MAX_BODY_BYTES='lots' is not valid: expected a whole number >= 1 (default 1048576)",
    ("WORKERS", "0"): "WORKERS='0' is out of range: expected a whole number >= 1 (default 1)",
    ("ACCESS_LOG", "maybe"): "ACCESS_LOG='maybe' is not valid: expected 1, 0, true or false (default 1)",
    ("UPSTREAM_TIMEOUT_S", "soon"): "UPSTREAM_TIMEOUT_S='soon' is not valid: expected a number >= 0.001 (default 60)",
    ("SHUTDOWN_GRACE_S", "nan"): "SHUTDOWN_GRACE_S='nan' is not valid: expected a number >= 0 (default 30)",
}


@pytest.mark.parametrize(("variable", "value"), list(BAD_SETTINGS))
def test_a_bad_setting_is_named_with_the_form_expected(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(tmp_path / ".env")
    assert str(caught.value) == BAD_SETTINGS[variable, value]


def test_a_bad_setting_stops_start_up_with_one_line_and_status_2(tmp_path: Path) -> None:
    """`python server.py` (and so the `streamgate` command: the same `main`) and `uvicorn
    streamgate.server:app` each print one line and exit with status 2, no traceback."""
    environment = {k: v for k, v in os.environ.items() if k not in KEYS}
    starts = {("PORT", "abc"): [str(ROOT / "server.py")], ("WORKERS", "0"): ["-m", "uvicorn", "streamgate.server:app"]}
    processes = {
        setting: subprocess.Popen(
            [sys.executable, *command],
            cwd=tmp_path,
            env={**environment, setting[0]: setting[1]},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for setting, command in starts.items()
    }
    for setting, process in processes.items():
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 2
        assert (stdout, stderr.decode()) == (b"", f"streamgate: cannot start: {BAD_SETTINGS[setting]}\n")


def test_dot_env_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("ECHO_DELAY_MS=0\nGATEWAY_API_KEY=from-dotenv\n")
    with server_process(tmp_path) as (_, url):
        assert httpx.get(url + "/api/v1/chat/stream/health").status_code == 401
        headers = {"authorization": "Bearer from-dotenv"}
        assert httpx.get(url + "/api/v1/chat/stream/health", headers=headers).status_code == 200
    with server_process(tmp_path, GATEWAY_API_KEY="from-env") as (_, url):
        headers = {"authorization": "Bearer from-env"}
        assert httpx.get(url + "/api/v1/chat/stream/health", headers=headers).status_code == 200
