"""`python -m bench.responses`: what `/v1/responses` costs the gateway, in CPU seconds of
the gateway process (`/proc/<pid>/stat`), against `bench.mock_upstream` speaking Anthropic.

- frames: CPU per content frame of a long answer, `/v1/responses` → anthropic (translated)
  against the native `/api/v1/chat/stream` → anthropic (target ≤ 1.3×);
- state: CPU per request continuing a stored conversation of `--turns` earlier turns
  (`previous_response_id` + the new message) against sending it whole (target ≤ 1.1×),
  in process and, with `redis-server` on the PATH, in Redis.

Rounds alternate the two sides of each ratio, so drift on a shared machine hits both. Every
process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def process(argv: list[str], env: dict[str, str], ready: Callable[[], bool]) -> Iterator[subprocess.Popen[bytes]]:
    started = subprocess.Popen(
        argv, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while not ready():
            if started.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[:3]} did not start")
            time.sleep(0.05)
        yield started
    finally:
        if started.poll() is None:
            os.kill(started.pid, signal.SIGTERM)
            try:
                started.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(started.pid, signal.SIGKILL)
                started.wait(5)


def answers(url: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            httpx.get(url, timeout=1)
            return True
        except httpx.TransportError:
            return False

    return ready


def measure(pid: int, send: Callable[[], None], count: int) -> float:
    """CPU seconds of the gateway per call of `send`, over `count` calls."""
    before = cpu_s(pid)
    for _ in range(count):
        send()
    return (cpu_s(pid) - before) / count


def alternate(pid: int, a: Callable[[], None], b: Callable[[], None], count: int, rounds: int) -> tuple[float, float]:
    for _ in range(3):  # warm both paths up
        a()
        b()
    totals = [0.0, 0.0]
    for _ in range(rounds):
        totals[0] += measure(pid, a, count)
        totals[1] += measure(pid, b, count)
    return totals[0] / rounds, totals[1] / rounds


def read_stream(client: httpx.Client, path: str, body: Mapping[str, object]) -> None:
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read()
        for _ in response.iter_raw():
            pass


def conversation(turns: int) -> list[dict[str, object]]:
    """`turns` earlier user/assistant exchanges as Responses input items."""
    items: list[dict[str, object]] = []
    for turn in range(turns):
        items.append({"role": "user", "content": [{"type": "input_text", "text": f"Question {turn}: " + "why? " * 40}]})
        items.append(
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": f"Answer {turn}: " + "because. " * 60}],
            }
        )
    return items


def state_phase(url: str, pid: int, turns: int, count: int, rounds: int) -> tuple[float, float]:
    client = httpx.Client(base_url=url, timeout=60)
    earlier = conversation(turns)
    model = "anthropic/bench-8-0"
    stored = client.post("/v1/responses", json={"model": model, "input": earlier[:-1]}).json()
    assert stored["status"] == "completed", stored
    new = {"role": "user", "content": "And now?"}

    def whole() -> None:
        read_stream(client, "/v1/responses", {"model": model, "stream": True, "input": [*earlier, new]})

    def continued() -> None:
        read_stream(
            client,
            "/v1/responses",
            {"model": model, "stream": True, "previous_response_id": stored["id"], "input": [new]},
        )

    return alternate(pid, whole, continued, count, rounds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2000, help="content frames per answer (frames phase)")
    parser.add_argument("--requests", type=int, default=10, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--turns", type=int, default=20, help="earlier turns of the stored conversation")
    args = parser.parse_args(argv)

    mock_port, gateway_port = free_port(), free_port()
    mock = [sys.executable, "-m", "bench.mock_upstream", "--port", str(mock_port)]
    with process(mock, {}, answers(f"http://127.0.0.1:{mock_port}/_bench/stats")):
        env = {
            "PORT": str(gateway_port),
            "ANTHROPIC_API_KEY": "sk-bench",
            "ACCESS_LOG": "0",
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{mock_port}",
            "MODEL_CATALOG_REFRESH_S": "0",
        }
        url = f"http://127.0.0.1:{gateway_port}"
        with process([sys.executable, "server.py"], env, answers(url + "/api/v1/chat/stream/health")) as gateway:
            client = httpx.Client(base_url=url, timeout=60)
            model = f"bench-{args.tokens}-0"
            native = {"provider": "anthropic", "model": model, "messages": [{"role": "user", "content": "Hi"}]}
            responses = {"model": f"anthropic/{model}", "input": "Hi", "stream": True}
            cost_native, cost_responses = alternate(
                gateway.pid,
                lambda: read_stream(client, "/api/v1/chat/stream", native),
                lambda: read_stream(client, "/v1/responses", responses),
                args.requests,
                args.rounds,
            )
            per_frame = [cost / args.tokens * 1e6 for cost in (cost_native, cost_responses)]
            print(
                f"frames: CPU per content frame, native → anthropic {per_frame[0]:.1f} µs, "
                f"/v1/responses → anthropic {per_frame[1]:.1f} µs: {per_frame[1] / per_frame[0]:.2f}× (≤ 1.3×)"
            )
            whole, continued = state_phase(url, gateway.pid, args.turns, args.requests * 3, args.rounds)
            print(
                f"state (in process): CPU per request, whole conversation {whole * 1e3:.2f} ms, "
                f"previous_response_id {continued * 1e3:.2f} ms: {continued / whole:.2f}× (≤ 1.1×)"
            )
        if shutil.which("redis-server") is None:
            print("state (Redis): skipped, redis-server not installed")
            return
        redis_port = free_port()
        with tempfile.TemporaryDirectory() as directory:
            redis_argv = [
                "redis-server",
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                directory,
            ]
            with (
                process(redis_argv, {}, lambda: _redis_up(redis_port)),
                process(
                    [sys.executable, "server.py"],
                    {**env, "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"},
                    answers(url + "/api/v1/chat/stream/health"),
                ) as gateway,
            ):
                whole, continued = state_phase(url, gateway.pid, args.turns, args.requests * 3, args.rounds)
                print(
                    f"state (Redis): CPU per request, whole conversation {whole * 1e3:.2f} ms, "
                    f"previous_response_id {continued * 1e3:.2f} ms: {continued / whole:.2f}× (≤ 1.1×)"
                )


def _redis_up(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(port=port).ping())
    except redis.ConnectionError:
        return False


if __name__ == "__main__":
    main()
