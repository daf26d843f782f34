"""Test helpers for resumable streams over real HTTP: start one and leave, resume one."""

from __future__ import annotations

from typing import Any

import httpx


def start(
    url: str, frames: int, payload: dict[str, Any], path: str = "/api/v1/chat/stream", **kwargs: Any
) -> tuple[str, bytes]:
    """POST a resumable stream, read until `frames` frames arrived, leave; (id, bytes read)."""
    with httpx.stream("POST", url + path, json=payload, timeout=20, **kwargs) as response:
        assert response.status_code == 200, response.read()
        received = b""
        for part in response.iter_bytes():
            received += part
            if received.count(b"\n\n") >= frames:
                break
        return response.headers["x-stream-id"], received


def resume_from(
    url: str,
    stream_id: str,
    after: int | None = None,
    path: str = "/api/v1/chat/stream/{}",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """`GET` the stream, with `Last-Event-ID: after` when given (none: from the start)."""
    headers = dict(headers or {})
    if after is not None:
        headers["last-event-id"] = str(after)
    return httpx.get(url + path.format(stream_id), headers=headers, timeout=20)
