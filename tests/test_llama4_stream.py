"""The `llama4` adapter end to end: our HTTP API → the real `openai` SDK pointed at
Together → Together's chunk bytes from an `httpx2.MockTransport` upstream."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import pytest

from streamgate import sse
from streamgate.providers.llama4_stream import SUPPORTED_LLAMA_MODELS, Llama4StreamAdapter
from streamgate.server import create_app
from support import serve, settings
from wire_openai import MockUpstream, Reply, split, sse_body

KEY = "together-test-key-0123456789"
MAVERICK, SCOUT = SUPPORTED_LLAMA_MODELS[:2]
HELLO = {"provider": "llama4", "messages": [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "Hello"}]}
TEXT = ["Bonjour", " le monde", " — ", "こんにちは", " 👋"]


def together_chunk(content: str, finish_reason: str | None = None, usage: dict[str, int] | None = None,
                   model: str = MAVERICK) -> dict[str, Any]:
    """A chunk as Together streams it: `text` and `token_id` beside the OpenAI fields, the
    role on every delta, `eos` at the end, the usage on the last choice-carrying chunk."""
    return {
        "id": "nq8Rsbx-62bZhn-8f3c3b1e0b0c1a2d", "object": "chat.completion.chunk", "created": 1734000000,
        "model": model,
        "choices": [{"index": 0, "text": content, "logprobs": None, "finish_reason": finish_reason, "seed": None,
                     "delta": {"token_id": 12345, "role": "assistant", "content": content, "tool_calls": None}}],
        "usage": usage,
    }


def together_completion(pieces: list[str], finish_reason: str = "eos") -> bytes:
    usage = {"prompt_tokens": 14, "completion_tokens": 5, "total_tokens": 19}
    return sse_body([*(together_chunk(p) for p in pieces), together_chunk("", finish_reason, usage)])


@contextmanager
def gateway(upstream: MockUpstream, **overrides: Any) -> Iterator[str]:
    config = settings(**{"together_api_key": KEY, "upstream_max_retries": 0, **overrides})
    adapter = Llama4StreamAdapter(config, http_client=upstream.client())
    with serve(create_app(config, adapters={"llama4": adapter})) as url:
        yield url


def post(url: str, body: dict[str, Any] = HELLO) -> httpx2.Response:
    return httpx2.post(url + "/api/v1/chat/stream", json=body, timeout=10)


def messages_of(response: httpx2.Response) -> list[dict[str, Any]]:
    events = [e for e in sse.Decoder().feed(response.content) if isinstance(e, sse.Event)]
    assert events[-1].data == "[DONE]"
    return [json.loads(e.data) for e in events[:-1]]


@pytest.mark.parametrize("piece_size", [1, 10_000])
def test_together_stream_with_eos_and_usage(piece_size: int) -> None:
    upstream = MockUpstream(Reply(200, split(together_completion(TEXT), piece_size)))
    with gateway(upstream) as url:
        response = post(url)
    assert response.status_code == 200
    messages = messages_of(response)
    assert [m["content"] for m in messages] == [*TEXT, ""]
    assert messages[-1] == {"content": "", "finish_reason": "stop", "model": MAVERICK, "provider": "llama4",
                            "usage": {"prompt_tokens": 14, "completion_tokens": 5, "total_tokens": 19}}


def test_what_is_sent_to_together() -> None:
    upstream = MockUpstream(Reply(200, [together_completion(["hi"])]))
    with gateway(upstream) as url:
        post(url, {**HELLO, "model": SCOUT, "temperature": 1.5, "max_tokens": 7})
    (seen,) = upstream.seen
    assert (seen.method, seen.url) == ("POST", "https://api.together.xyz/v1/chat/completions")
    assert seen.json == {"model": SCOUT, "messages": HELLO["messages"], "temperature": 1.5, "max_tokens": 7,
                         "stream": True, "stream_options": {"include_usage": True}}
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert re.fullmatch(r"[0-9a-f]{32}", seen.headers["x-request-id"])


def test_openai_environment_never_reaches_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """The openai SDK reads these for every client it builds; Together must get none."""
    monkeypatch.setenv("OPENAI_ORG_ID", "org-secretorg")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_secretproject")
    monkeypatch.setenv("OPENAI_CUSTOM_HEADERS", "Authorization: Bearer sk-openai-secret\nX-Internal-Team: core")
    upstream = MockUpstream(Reply(200, [together_completion(["hi"])]))
    with gateway(upstream) as url:
        assert post(url).status_code == 200
    (seen,) = upstream.seen
    assert seen.headers.get_list("authorization") == [f"Bearer {KEY}"]
    sent = "\n".join(f"{name}: {value}" for name, value in seen.headers.multi_items())
    for leaked in ("org-secretorg", "proj_secretproject", "sk-openai-secret", "X-Internal-Team"):
        assert leaked.lower() not in sent.lower()
    assert {"user-agent", "x-stainless-lang", "x-stainless-retry-count", "content-type"} <= set(seen.headers.keys())


def test_together_base_url_overrides() -> None:
    upstream = MockUpstream(Reply(200, [together_completion(["hi"])]))
    with gateway(upstream, together_base_url="http://together.internal:9000/v1") as url:
        assert post(url).status_code == 200
    assert upstream.seen[0].url == "http://together.internal:9000/v1/chat/completions"


def test_model_outside_the_list_is_422_without_an_upstream_call() -> None:
    upstream = MockUpstream()
    with gateway(upstream) as url:
        response = post(url, {**HELLO, "model": "meta-llama/Llama-3.3-70B-Instruct-Turbo"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "model_not_supported" and error["provider"] == "llama4"
    assert all(model in error["message"] for model in SUPPORTED_LLAMA_MODELS)
    assert upstream.seen == []


def test_missing_key_is_401_naming_the_variable() -> None:
    upstream = MockUpstream()
    with gateway(upstream, together_api_key=None) as url:
        response = post(url)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "provider_auth_error" and "TOGETHER_API_KEY" in error["message"]
    assert upstream.seen == []


def test_together_401_names_its_key() -> None:
    upstream = MockUpstream(Reply.error(401, "Invalid API key provided. You can find your API key at ..."))
    with gateway(upstream) as url:
        response = post(url)
    assert response.status_code == 401
    assert response.json()["error"] == {"type": "provider_auth_error", "provider": "llama4",
                                         "message": "llama4 rejected the API key; check TOGETHER_API_KEY"}


def test_models_listed_for_health() -> None:
    upstream = MockUpstream()
    with gateway(upstream) as url:
        health = httpx2.get(url + "/api/v1/chat/stream/health").json()["providers"]["llama4"]
    assert health == {"configured": True, "default_model": MAVERICK, "models": list(SUPPORTED_LLAMA_MODELS)}
