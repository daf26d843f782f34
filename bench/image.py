"""What a chat request carrying an image costs the gateway, against a text-only one.

    python -m bench.image [--mib 1] [--requests 100]

Starts the bench mock upstream and `python server.py` (openai path, `ACCESS_LOG=0`), sends
the same streamed request with and without a `data:` URL image of `--mib` MiB (random bytes:
the gateway checks the base64, it does not look at the picture), and prints the server's
CPU time per request and its peak RSS. Every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import time

import httpx

from bench.run import ROOT, cpu_seconds, free_port


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def request_body(image_url: str | None) -> bytes:
    content: list[dict[str, object]] = [{"type": "text", "text": "What is this?"}]
    if image_url is not None:
        content.append({"type": "image_url", "image_url": {"url": image_url}})
    return json.dumps(
        {"provider": "openai", "model": "bench-8-0", "messages": [{"role": "user", "content": content}]}
    ).encode()


def measure(client: httpx.Client, url: str, pid: int, body: bytes, requests: int) -> float:
    """Server CPU milliseconds per request (after a few warm-up requests)."""
    for _ in range(5):
        client.post(url, content=body, headers={"content-type": "application/json"})
    before = cpu_seconds(pid)
    for _ in range(requests):
        answer = client.post(url, content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 200 and b'"finish_reason":"stop"' in answer.content, answer.content[:300]
    return (cpu_seconds(pid) - before) / requests * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.image", description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=1.0)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args(argv)
    image = "data:image/png;base64," + base64.b64encode(os.urandom(int(args.mib * (1 << 20)))).decode()
    mock = subprocess.Popen([sys.executable, "-m", "bench.mock_upstream"], cwd=ROOT, stdout=subprocess.PIPE)
    server = None
    try:
        mock_port = int(mock.stdout.readline().split()[1])  # type: ignore[union-attr]
        port = free_port()
        env = {
            **os.environ,
            "PORT": str(port),
            "OPENAI_BASE_URL": f"http://127.0.0.1:{mock_port}/v1",
            "OPENAI_API_KEY": "bench",
            "MAX_BODY_BYTES": str(int(args.mib * 2 + 1) << 20),
            "ACCESS_LOG": "0",
            "MODEL_CATALOG_REFRESH_S": "0",
        }
        server = subprocess.Popen(
            [sys.executable, "server.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=30) as client:
            for _ in range(300):
                try:
                    client.get(base + "/api/v1/chat/stream/health")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            url = base + "/api/v1/chat/stream"
            text_ms = measure(client, url, server.pid, request_body(None), args.requests)
            text_rss = peak_rss_kib(server.pid)
            image_body = request_body(image)
            image_ms = measure(client, url, server.pid, image_body, args.requests)
            image_rss = peak_rss_kib(server.pid)
        print(f"text only: {text_ms:.2f} ms server CPU per request, peak RSS {text_rss} KiB")
        print(
            f"{args.mib:g} MiB image ({len(image_body)} bytes of body): {image_ms:.2f} ms server CPU per request, "
            f"peak RSS {image_rss} KiB (+{image_rss - text_rss} KiB)"
        )
    finally:
        for process in (server, mock):
            if process is not None:
                process.terminate()
                process.wait(10)


if __name__ == "__main__":
    main()
