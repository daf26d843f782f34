"""Cached tokens: what each provider read from (and wrote to) its prompt cache, from its own
usage bytes, in native usage, `/v1/chat/completions` usage, the request log and `/metrics`.

Each scripted stream is first read by the provider's official SDK, so the numbers the
gateway reports are the ones the provider's own client would see.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from test_metrics import delta, key, scrape
from wire_anthropic import MESSAGE_STOP, event, message_start, sdk_message, text_block
from wire_gemini import frame, sdk_stream, text, usage_metadata
from wire_gemini import sse_body as gemini_body
from wire_openai import sdk_chunks, sse_body
from wire_together import MAVERICK, together_chunk
from wire_upstreams import ProviderUpstream, providers_gateway

HELLO = [{"role": "user", "content": "Hello"}]


def anthropic_stream() -> bytes:
    """A cache hit and a cache write: 3000 read, 200 written, 10 more input tokens."""
    end = event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 6},
        },
    )
    reads = [
        message_start(10, cache_creation_input_tokens=200, cache_read_input_tokens=3000),
        *text_block(0, ["Hi", " there"]),
        end,
        MESSAGE_STOP,
    ]
    usage = sdk_message(reads).usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (10, 3000, 200)
    return b"".join(reads)


def gemini_stream() -> bytes:
    """`cachedContentTokenCount` 2048 of a 2100-token prompt (implicit caching)."""
    usage = {
        **usage_metadata(2100, 6, None),
        "cachedContentTokenCount": 2048,
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 2048}],
    }
    body = gemini_body(frame(text("Hi")), frame(text(" there"), finish_reason="STOP", usage=usage))
    assert sdk_stream(body)[-1].usage_metadata.cached_content_token_count == 2048
    return body


def together_stream() -> bytes:
    """Together's OpenAI-shaped usage with `prompt_tokens_details.cached_tokens`."""
    usage = {
        "prompt_tokens": 1500,
        "completion_tokens": 6,
        "total_tokens": 1506,
        "prompt_tokens_details": {"cached_tokens": 1024},
    }
    body = sse_body([together_chunk("Hi"), together_chunk(" there"), together_chunk("", "eos", usage)])
    assert sdk_chunks(body)[-1].usage.prompt_tokens_details.cached_tokens == 1024  # type: ignore[union-attr]
    return body


#: provider, model, its stream, the usage the gateway reports.
CASES = [
    (
        "anthropic",
        "claude-sonnet-5-5",
        anthropic_stream,
        {
            "prompt_tokens": 3210,
            "completion_tokens": 6,
            "total_tokens": 3216,
            "cached_tokens": 3000,
            "cache_creation_tokens": 200,
        },
    ),
    (
        "gemini",
        "gemini-2.5-flash",
        gemini_stream,
        {"prompt_tokens": 2100, "completion_tokens": 6, "total_tokens": 2106, "cached_tokens": 2048},
    ),
    (
        "llama4",
        MAVERICK,
        together_stream,
        {"prompt_tokens": 1500, "completion_tokens": 6, "total_tokens": 1506, "cached_tokens": 1024},
    ),
]
IDS = [case[0] for case in CASES]


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[str, ProviderUpstream]]:
    with providers_gateway() as gateway:
        yield gateway


def last_message(body: str) -> dict[str, Any]:
    frames = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]
    return frames[-1]


@pytest.mark.parametrize(("provider", "model", "stream", "usage"), CASES, ids=IDS)
def test_native_usage_carries_cached_tokens(
    running: tuple[str, ProviderUpstream], provider: str, model: str, stream: Any, usage: dict[str, int]
) -> None:
    url, upstream = running
    body = stream()
    upstream.script(body, body)
    request = {"provider": provider, "model": model, "messages": HELLO}
    streamed = httpx.post(url + "/api/v1/chat/stream", json=request, timeout=10)
    assert last_message(streamed.text)["usage"] == usage
    answer = httpx.post(url + "/api/v1/chat", json=request, timeout=10).json()
    assert (answer["content"], answer["usage"]) == ("Hi there", usage)


@pytest.mark.parametrize(("provider", "model", "stream", "usage"), CASES, ids=IDS)
def test_chat_completions_usage_carries_prompt_tokens_details(
    running: tuple[str, ProviderUpstream], provider: str, model: str, stream: Any, usage: dict[str, int]
) -> None:
    url, upstream = running
    body = stream()
    upstream.script(body, body)
    with openai.OpenAI(base_url=url + "/v1", api_key="-", max_retries=0) as client:
        chunks = list(
            client.chat.completions.create(
                model=f"{provider}/{model}", messages=HELLO, stream=True, stream_options={"include_usage": True}
            )
        )
        completion = client.chat.completions.create(model=f"{provider}/{model}", messages=HELLO)
    for reported in (chunks[-1].usage, completion.usage):
        assert reported is not None and reported.prompt_tokens_details is not None
        assert reported.prompt_tokens == usage["prompt_tokens"]
        assert reported.prompt_tokens_details.cached_tokens == usage["cached_tokens"]


def test_no_cache_no_cached_fields(running: tuple[str, ProviderUpstream]) -> None:
    """A provider that read nothing from its cache (Anthropic says 0): no cached keys."""
    url, upstream = running
    reads = [
        message_start(10, cache_creation_input_tokens=0, cache_read_input_tokens=0),
        *text_block(0, ["Hi"]),
        event(
            "message_delta",
            {
                "type": "message_delta",
                "usage": {"output_tokens": 1},
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            },
        ),
        MESSAGE_STOP,
    ]
    upstream.script(b"".join(reads))
    with openai.OpenAI(base_url=url + "/v1", api_key="-", max_retries=0) as client:
        completion = client.chat.completions.create(model="anthropic/claude-sonnet-5-5", messages=HELLO)
    assert completion.usage is not None and completion.usage.prompt_tokens_details is None
    assert completion.usage.model_dump(exclude_none=True) == {
        "prompt_tokens": 10,
        "completion_tokens": 1,
        "total_tokens": 11,
    }


def test_log_and_metrics_count_cached_tokens(
    running: tuple[str, ProviderUpstream], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streamgate.access")
    url, upstream = running
    upstream.script(anthropic_stream())
    before = scrape(url)
    request = {"provider": "anthropic", "messages": HELLO}
    assert httpx.post(url + "/api/v1/chat/stream", json=request, timeout=10).status_code == 200
    deadline = time.monotonic() + 5
    while not (lines := [r.getMessage() for r in caplog.records if r.name == "streamgate.access"]):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert " tokens=3210+6 cached=3000" in lines[0]
    changed = delta(before, scrape(url))
    assert {name: value for name, value in changed.items() if name[0] == "streamgate_tokens_total"} == {
        key("streamgate_tokens_total", provider="anthropic", type="prompt"): 3210,
        key("streamgate_tokens_total", provider="anthropic", type="completion"): 6,
        key("streamgate_tokens_total", provider="anthropic", type="cached"): 3000,
        key("streamgate_tokens_total", provider="anthropic", type="cache_creation"): 200,
    }
