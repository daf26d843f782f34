"""The deployment the README describes, run for real: nginx with `docs/nginx.conf` in
front of two `python server.py` replicas sharing a `redis-server`. A stream started
through nginx resumes through nginx on either replica (round robin sends consecutive
requests to both), frames and heartbeats pass unbuffered."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from processes import ROOT, free_port, gateways, running_redis, wait_until_answering
from streamgate import sse

if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
    pytest.skip("nginx not installed", allow_module_level=True)
if shutil.which("redis-server") is None:
    pytest.skip("redis-server not installed", allow_module_level=True)

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def text_of(raw: bytes) -> str:
    events = [e for e in sse.Decoder().feed(raw) if isinstance(e, sse.Event)]
    return "".join(json.loads(e.data)["content"] for e in events if e.event == "message" and e.data != "[DONE]")


def test_a_stream_resumes_through_nginx_on_either_replica(tmp_path: Path) -> None:
    with (
        running_redis(tmp_path) as store,
        gateways(tmp_path, 2, REDIS_URL=store.url, ECHO_DELAY_MS="400", SSE_HEARTBEAT_S="0.15") as replicas,
    ):
        port = free_port()
        config = (ROOT / "docs" / "nginx.conf").read_text()
        for default, replica in zip(("127.0.0.1:8001", "127.0.0.1:8002"), replicas, strict=True):
            config = config.replace(default, replica[1].removeprefix("http://"))
        config = config.replace("listen 127.0.0.1:8080", f"listen 127.0.0.1:{port}")
        prefix = tmp_path / "nginx"
        prefix.mkdir()
        (prefix / "nginx.conf").write_text(config)
        nginx = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr", "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_answering(nginx, url + "/api/v1/chat/stream/health", timeout_s=10)
            words = " ".join(f"w{i}" for i in range(5))
            body = {"provider": "echo", "resumable": True, "messages": [{"role": "user", "content": words}]}
            with httpx.stream("POST", url + "/api/v1/chat/stream", json=body, timeout=20) as response:
                stream_id = response.headers["x-stream-id"]
                sent_at = time.monotonic()
                first = next(response.iter_bytes())
                first_after = time.monotonic() - sent_at
            assert first.startswith(b"id: 1\n") and first_after < 1.0  # not held back to the end (1.6 s)
            resumes = [
                httpx.get(url + f"/api/v1/chat/stream/{stream_id}", headers={"last-event-id": "1"}, timeout=20)
                for _ in range(2)
            ]  # one on each replica
            assert b": keep-alive\n\n" in resumes[0].content  # live: idle 0.4 s between words, heartbeat 0.15 s
            assert resumes[0].content.replace(b": keep-alive\n\n", b"") == resumes[1].content
            assert text_of(first) + text_of(resumes[1].content) == words
            assert resumes[1].content.endswith(b"data: [DONE]\n\n")
            assert httpx.delete(url + f"/api/v1/chat/stream/{stream_id}", timeout=20).status_code == 204
        finally:
            nginx.terminate()
            nginx.wait(10)
