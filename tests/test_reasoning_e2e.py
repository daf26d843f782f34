"""Issue 13's "done when", end to end: today's reasoning models asked with no
`temperature` and no `max_tokens` — OpenAI `gpt-5.5`, Anthropic `claude-sonnet-5-5` with
`reasoning_effort: "high"`, Gemini `gemini-3.8-flash` with `"low"` — stream from a
loopback upstream speaking today's wire: `reasoning` frames and `reasoning_tokens` on the
native endpoint, `delta.reasoning_content` and `completion_tokens_details` through the
official `openai` SDK on `/v1`. The seeds' requests (`gpt-4o`, `gemini-2.5-flash` with
`thinking_enabled`, Llama 4 Maverick) reach their upstreams exactly as before."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, NamedTuple

import httpx2
import openai
import pytest
from support import Answer
from test_anthropic_request import sdk_checked
from wire_anthropic import sdk_message, text_block, thinking_block, whole_stream
from wire_gemini import frame, sdk_request, sdk_stream, text, thought, usage_metadata
from wire_gemini import sse_body as gemini_body
from wire_openai import chunk, openai_refusal, sdk_chunks, sse_body, usage_chunk
from wire_together import MAVERICK
from wire_upstreams import ProviderUpstream, providers_gateway, text_stream

QUESTION = [{"role": "user", "content": "Why is the sky blue? 🌌"}]
TEXT = ["Rayleigh", " scattering: ", "blue light 散乱 more.\n", "🌞"]


class Case(NamedTuple):
    provider: str
    model: str
    fields: dict[str, Any]  # of the request, besides messages
    body: bytes  # the upstream's stream
    reasoning: list[str]  # the reasoning text pieces it streams
    usage: dict[str, int]  # ours, in the final frame
    sent: dict[str, Any]  # what the upstream receives (from either endpoint)


GPT_55 = "gpt-5.5-2026-04-23"  # what OpenAI names in its chunks for `gpt-5.5`
THOUGHTS = ["Light meets air molecules; ", "shorter wavelengths scatter — ", "λ⁻⁴ 🎓."]
GEMINI_THOUGHTS = ["**Recalling** Rayleigh scattering, ", "then answering briefly."]

CASES = [
    Case(
        "openai",
        "gpt-5.5",
        {},
        sse_body(
            [
                chunk(role="assistant", model=GPT_55),
                *(chunk(p, model=GPT_55) for p in TEXT),
                chunk(finish_reason="stop", model=GPT_55),
                usage_chunk(14, 160, model=GPT_55, reasoning_tokens=128),
            ]
        ),
        [],  # OpenAI streams no reasoning text on Chat Completions, only its count
        {"prompt_tokens": 14, "completion_tokens": 160, "total_tokens": 174, "reasoning_tokens": 128},
        {"model": "gpt-5.5", "messages": QUESTION, "stream": True, "stream_options": {"include_usage": True}},
    ),
    Case(
        "anthropic",
        "claude-sonnet-5-5",
        {"reasoning_effort": "high", "include_reasoning": True},
        b"".join(whole_stream(thinking_block(0, THOUGHTS), text_block(1, TEXT), output_tokens=95, thinking_tokens=61)),
        THOUGHTS,
        {"prompt_tokens": 25, "completion_tokens": 95, "total_tokens": 120, "reasoning_tokens": 61},
        {
            "model": "claude-sonnet-5-5",
            "max_tokens": 16384,
            "messages": QUESTION,
            "stream": True,
            "thinking": {"type": "adaptive", "display": "summarized"},
            "output_config": {"effort": "high"},
        },
    ),
    Case(
        "gemini",
        "gemini-3.8-flash",
        {"reasoning_effort": "low", "include_reasoning": True},
        gemini_body(
            *(frame(thought(t), model_version="gemini-3.8-flash") for t in GEMINI_THOUGHTS),
            frame(text(TEXT[0]), text(TEXT[1]), model_version="gemini-3.8-flash"),
            *(frame(text(p), model_version="gemini-3.8-flash") for p in TEXT[2:]),
            frame(text(""), finish_reason="STOP", usage=usage_metadata(7, 20, 52), model_version="gemini-3.8-flash"),
        ),
        GEMINI_THOUGHTS,
        {"prompt_tokens": 7, "completion_tokens": 72, "total_tokens": 79, "reasoning_tokens": 52},
        {
            "contents": [{"role": "user", "parts": [{"text": QUESTION[0]["content"]}]}],
            "generationConfig": {"thinkingConfig": {"thinkingLevel": "LOW", "includeThoughts": True}},
        },
    ),
]


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[str, ProviderUpstream]]:
    with providers_gateway() as running:
        yield running


@pytest.fixture(params=CASES, ids=[case.provider for case in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


def test_the_scripted_streams_are_todays_wire(case: Case) -> None:
    """Each provider's SDK reads the scripted stream: its reasoning, text and counts."""
    if case.provider == "openai":
        chunks = sdk_chunks(case.body)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(TEXT)
        assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 128  # type: ignore[union-attr]
    elif case.provider == "anthropic":
        message = sdk_message([case.body])
        assert [(b.type, getattr(b, "thinking", None) or getattr(b, "text", None)) for b in message.content] == [
            ("thinking", "".join(THOUGHTS)),
            ("text", "".join(TEXT)),
        ]
        assert message.usage.output_tokens_details.thinking_tokens == 61  # type: ignore[union-attr]
    else:
        responses = sdk_stream(case.body)
        parts = [p for r in responses for p in r.candidates[0].content.parts or []]
        assert [p.text for p in parts if p.thought] == GEMINI_THOUGHTS
        assert "".join(p.text or "" for p in parts if not p.thought) == "".join(TEXT)
        assert responses[-1].usage_metadata.thoughts_token_count == 52  # type: ignore[union-attr]


def assert_sent(case: Case, upstream: ProviderUpstream) -> None:
    """The upstream got no temperature and no length limit (the model's own defaults), in
    a body its own SDK takes, and one today's OpenAI does not refuse."""
    [request] = upstream.seen
    assert request.json == case.sent
    if case.provider == "openai":
        assert openai_refusal(request.json) is None
    elif case.provider == "anthropic":
        sdk_checked(request.json)
    else:
        sdk_request(request.json)


def test_native_stream_has_reasoning_frames_and_reasoning_tokens(
    gateway: tuple[str, ProviderUpstream], case: Case
) -> None:
    url, upstream = gateway
    upstream.script(case.body)
    answer = Answer(
        httpx2.post(
            f"{url}/api/v1/chat/stream",
            timeout=10,
            json={"provider": case.provider, "model": case.model, "messages": QUESTION, **case.fields},
        )
    )
    assert answer.status == 200 and answer.raw.endswith(b"data: [DONE]\n\n")
    events = [e for e in answer.events if e.data != "[DONE]"]
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
    who = {"model": case.model, "provider": case.provider}
    reasoning = [json.loads(e.data) for e in events if e.event == "reasoning"]
    assert reasoning == [{"reasoning": r, **who} for r in case.reasoning]
    assert answer.messages == [
        *({"content": p, "finish_reason": None, **who, "usage": None} for p in TEXT),
        {"content": "", "finish_reason": "stop", **who, "usage": case.usage},
    ]
    assert [e.event for e in events] == ["reasoning"] * len(case.reasoning) + ["message"] * (len(TEXT) + 1)
    assert_sent(case, upstream)


def test_v1_stream_has_reasoning_content_and_reasoning_tokens(
    gateway: tuple[str, ProviderUpstream], case: Case
) -> None:
    url, upstream = gateway
    upstream.script(case.body)
    effort = case.fields.get("reasoning_effort")
    # `/v1` asks for reasoning text by default, which takes OpenAI's reasoning models to its
    # Responses API (test_openai_responses_upstream.py); here the Chat Completions path.
    opt_out = {"extra_body": {"include_reasoning": False}} if case.provider == "openai" else {}
    with openai.OpenAI(base_url=f"{url}/v1", api_key="sk-gateway", max_retries=0) as client:
        stream = client.chat.completions.create(
            model=f"{case.provider}/{case.model}",
            messages=QUESTION,
            stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
            **({"reasoning_effort": effort} if effort else {}),
            **opt_out,
        )
        chunks = list(stream)
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = [(d.model_extra or {}).get("reasoning_content") for d in deltas]
    assert [r for r in reasoning if r is not None] == case.reasoning
    assert "".join(d.content or "" for d in deltas) == "".join(TEXT)
    never_both = all(r is None or d.content is None for r, d in zip(reasoning, deltas, strict=True))
    assert never_both, "reasoning never enters content"
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
        usage.completion_tokens_details.reasoning_tokens,
    ) == tuple(case.usage.values())
    assert_sent(case, upstream)


# --- the seeds' requests, as before ----------------------------------------------------------

SEEDS = [
    (
        "openai",
        {"model": "gpt-4o", "temperature": 0.7, "max_tokens": 1024, "thinking_enabled": False},
        {
            "model": "gpt-4o",
            "messages": QUESTION,
            "temperature": 0.7,
            "max_completion_tokens": 1024,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ),
    (
        "gemini",
        {"model": "gemini-2.5-flash", "temperature": 0.7, "max_tokens": 1024, "thinking_enabled": True},
        {
            "contents": [{"role": "user", "parts": [{"text": QUESTION[0]["content"]}]}],
            "generationConfig": {
                "temperature": 0.7,
                "maxOutputTokens": 1024,
                "thinkingConfig": {"thinkingBudget": 1024},
            },
        },
    ),
    (
        "gemini",
        {"model": "gemini-2.5-flash", "temperature": 0.7, "max_tokens": 1024, "thinking_enabled": False},
        {
            "contents": [{"role": "user", "parts": [{"text": QUESTION[0]["content"]}]}],
            "generationConfig": {"temperature": 0.7, "maxOutputTokens": 1024, "thinkingConfig": {"thinkingBudget": 0}},
        },
    ),
    (
        "llama4",
        {"model": MAVERICK, "temperature": 0.7, "max_tokens": 1024, "thinking_enabled": True},
        {
            "model": MAVERICK,
            "messages": QUESTION,
            "temperature": 0.7,
            "max_tokens": 1024,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ),
]


@pytest.mark.parametrize(
    ("provider", "fields", "sent"),
    SEEDS,
    ids=["gpt-4o", "gemini-2.5-flash-thinking", "gemini-2.5-flash", "llama4-maverick"],
)
def test_the_seeds_requests_reach_the_upstream_as_before(
    gateway: tuple[str, ProviderUpstream], provider: str, fields: dict[str, Any], sent: dict[str, Any]
) -> None:
    url, upstream = gateway
    upstream.script(text_stream(provider, TEXT))
    answer = Answer(
        httpx2.post(
            f"{url}/api/v1/chat/stream", timeout=10, json={"provider": provider, "messages": QUESTION, **fields}
        )
    )
    assert answer.text == "".join(TEXT) and [e.event for e in answer.events] == ["message"] * (len(TEXT) + 2)
    assert answer.messages[-1] == {
        "content": "",
        "finish_reason": "stop",
        "model": fields["model"],
        "provider": provider,
        "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21},
    }
    [request] = upstream.seen
    assert request.json == sent
    if provider == "gemini":
        sdk_request(request.json)


def test_gemini_25_on_v1_asks_for_no_thoughts_while_thinking_is_off(gateway: tuple[str, ProviderUpstream]) -> None:
    """`/v1` asks for reasoning by default; with thinking off (budget 0) Gemini refuses
    `includeThoughts`, so none is sent."""
    url, upstream = gateway
    upstream.script(text_stream("gemini", TEXT))
    with openai.OpenAI(base_url=f"{url}/v1", api_key="sk-gateway", max_retries=0) as client:
        completion = client.chat.completions.create(model="gemini/gemini-2.5-flash", messages=QUESTION)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "".join(TEXT)
    [request] = upstream.seen
    assert request.json["generationConfig"] == {"thinkingConfig": {"thinkingBudget": 0}}
