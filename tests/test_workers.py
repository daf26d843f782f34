"""`WORKERS=2 python server.py`: two uvicorn workers on one port serve streams, `/metrics`
adds both up (whichever worker answers the scrape), and SIGTERM still lets a stream in
flight finish."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import httpx
from processes import gateways
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from streamgate import sse

REQUESTS = re.compile(rb'^streamgate_requests_total\{provider="echo"\} (\S+)$', re.M)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def echo_requests(exposition: bytes) -> float:
    match = REQUESTS.search(exposition)
    return float(match.group(1)) if match else 0.0


def per_worker_requests(metrics_dir: str) -> dict[int, float]:
    """Each worker's own count, read from its files in the multiprocess directory."""
    counts = {}
    for path in Path(metrics_dir).glob("counter_*.db"):
        with tempfile.TemporaryDirectory() as alone:
            shutil.copy(path, alone)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=alone)
            counts[int(path.stem.split("_")[1])] = echo_requests(generate_latest(registry))
    return counts


def test_two_workers_serve_streams_and_metrics_add_them_up(tmp_path: Path) -> None:
    with gateways(tmp_path, 1, WORKERS="2", ECHO_DELAY_MS="30") as [(process, url)]:
        deadline = time.monotonic() + 90
        while len(workers := children(process.pid)) < 2 or not all(
            httpx.get(url + "/api/v1/chat/stream/health", timeout=5).status_code == 200 for _ in range(4)
        ):
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.2)
        words = " ".join(f"w{i}" for i in range(10))
        texts: list[str] = []

        def one_stream() -> None:
            response = httpx.post(
                url + "/api/v1/chat/stream",
                timeout=30,
                json={"provider": "echo", "messages": [{"role": "user", "content": words}]},
            )
            messages = [e for e in sse.Decoder().feed(response.content) if isinstance(e, sse.Event)][:-1]
            texts.append("".join(json.loads(e.data)["content"] for e in messages))

        threads = [threading.Thread(target=one_stream) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert texts == [words] * 8
        scrapes = [httpx.get(url + "/metrics", timeout=10).content for _ in range(6)]
        assert [echo_requests(scrape) for scrape in scrapes] == [8.0] * 6
        assert b'streamgate_streams_in_flight{provider="echo"} 0.0' in scrapes[0]
        assert re.search(rb"^streamgate_event_loop_lag_seconds_count [1-9]", scrapes[0], re.M)  # the workers' timers
        metrics_dir = (Path("/proc") / str(workers[0]) / "environ").read_bytes().split(b"\0")
        directory = next(v.split(b"=", 1)[1] for v in metrics_dir if v.startswith(b"PROMETHEUS_MULTIPROC_DIR="))
        counts = per_worker_requests(directory.decode())
        assert set(counts) <= set(workers) and sum(counts.values()) == 8.0

        with httpx.stream(
            "POST",
            url + "/api/v1/chat/stream",
            timeout=30,
            json={"provider": "echo", "messages": [{"role": "user", "content": words}]},
        ) as response:
            chunks = response.iter_bytes()
            received = next(chunks)
            process.send_signal(signal.SIGTERM)
            received += b"".join(chunks)
        messages = [e for e in sse.Decoder().feed(received) if isinstance(e, sse.Event)]
        assert "".join(json.loads(e.data)["content"] for e in messages[:-1]) == words
        assert process.wait(30) == 0
        assert not os.path.exists(directory.decode())  # the parent removed its metrics directory
        assert b"Stopping parent process" in process.stdout.read()  # type: ignore[union-attr]


def test_two_workers_write_the_request_log(tmp_path: Path) -> None:
    """Each worker is a spawned process: the request log (and every warning) must be
    configured there too, not only in the parent."""
    with gateways(tmp_path, 1, WORKERS="2", ECHO_DELAY_MS="0") as [(process, url)]:
        deadline = time.monotonic() + 90
        while len(children(process.pid)) < 2:
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.2)
        for i in range(6):
            body = {"provider": "echo", "messages": [{"role": "user", "content": f"logged {i}"}]}
            assert httpx.post(url + "/api/v1/chat/stream", json=body, timeout=30).status_code == 200
        assert httpx.post(url + "/api/v1/chat/stream", content=b"{", timeout=30).status_code == 400
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode()
    lines = [line for line in output.splitlines() if "streamgate.access:" in line]
    assert sum("POST /api/v1/chat/stream 200 provider=echo model=echo" in line for line in lines) == 6, output
    assert sum("POST /api/v1/chat/stream 400" in line and "error=invalid_json" in line for line in lines) == 1
