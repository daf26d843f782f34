"""Each provider called directly with its official SDK, streaming, as a client without the
gateway would: the baseline of `python -m bench live`.

Base URLs, keys, timeout and retries come from the variables the gateway reads
(`OPENAI_*`, `ANTHROPIC_*`, `GEMINI_*`, `TOGETHER_*`, `UPSTREAM_TIMEOUT_S`,
`UPSTREAM_MAX_RETRIES`), and each request asks for what the gateway's own request for the
same prompt asks (the length limit, usage in the stream, Gemini's thinking switched off as
far as the model allows), so the two sides differ by the gateway alone.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

OPENAI_BASE_URL = "https://api.openai.com/v1"
TOGETHER_BASE_URL = "https://api.together.xyz/v1"
PROVIDERS = ("openai", "anthropic", "gemini", "llama4")


class Stopwatch:
    """When a request started, when its first answer text arrived, when it ended
    (`time.perf_counter()` seconds)."""

    __slots__ = ("ended_at", "first_text_at", "started_at")

    def __init__(self) -> None:
        self.started_at = time.perf_counter()
        self.first_text_at: float | None = None
        self.ended_at: float | None = None

    def text(self, text: str | None) -> None:
        if text and self.first_text_at is None:
            self.first_text_at = time.perf_counter()

    def end(self) -> None:
        self.ended_at = time.perf_counter()


#: (model, prompt, max_tokens, stopwatch) -> the output tokens the provider reported, or None.
StreamCall = Callable[[str, str, int, Stopwatch], Awaitable[int | None]]


@dataclass(frozen=True)
class DirectClient:
    provider: str
    stream: StreamCall
    close: Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Upstream:
    """What the gateway reads from the environment for one provider."""

    api_key: str | None
    base_url: str | None
    timeout_s: float
    max_retries: int


def upstream_of(provider: str, env: Mapping[str, str]) -> Upstream:
    prefix = {"llama4": "TOGETHER"}.get(provider, provider.upper())
    return Upstream(
        env.get(f"{prefix}_API_KEY"),
        env.get(f"{prefix}_BASE_URL") or None,
        float(env.get("UPSTREAM_TIMEOUT_S", "60")),
        int(env.get("UPSTREAM_MAX_RETRIES", "2")),
    )


def direct_client(provider: str, env: Mapping[str, str]) -> DirectClient:
    upstream = upstream_of(provider, env)
    if upstream.api_key is None:
        raise ValueError(f"{provider}: no API key in the environment (the variables the gateway reads)")
    build = {"openai": _openai, "llama4": _together, "anthropic": _anthropic, "gemini": _gemini}[provider]
    return build(upstream)


def error_type(exc: BaseException) -> str:
    """An SDK exception as a short type: its class and the HTTP status when it has one."""
    status = getattr(exc, "status_code", None) or getattr(exc, "code", None)
    return f"{type(exc).__name__} {status}" if isinstance(status, int) else type(exc).__name__


# --- OpenAI and Together (the same wire, the openai SDK) ------------------------------------


def _openai_compatible(upstream: Upstream, default_url: str, provider: str, limit_name: str) -> DirectClient:
    import openai

    client = openai.AsyncOpenAI(
        api_key=upstream.api_key,
        base_url=upstream.base_url or default_url,
        timeout=upstream.timeout_s,
        max_retries=upstream.max_retries,
    )

    async def stream(model: str, prompt: str, max_tokens: int, watch: Stopwatch) -> int | None:
        chunks = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            stream=True,
            stream_options={"include_usage": True},
            **{limit_name: max_tokens},
        )  # type: ignore[call-overload]
        tokens = None
        async for chunk in chunks:
            if chunk.choices:
                watch.text(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        return tokens

    return DirectClient(provider, stream, client.close)


def _openai(upstream: Upstream) -> DirectClient:
    return _openai_compatible(upstream, OPENAI_BASE_URL, "openai", "max_completion_tokens")


def _together(upstream: Upstream) -> DirectClient:
    return _openai_compatible(upstream, TOGETHER_BASE_URL, "llama4", "max_tokens")


# --- Anthropic ----------------------------------------------------------------------------


def _anthropic(upstream: Upstream) -> DirectClient:
    import anthropic

    client = anthropic.AsyncAnthropic(
        api_key=upstream.api_key,
        base_url=upstream.base_url,
        timeout=upstream.timeout_s,
        max_retries=upstream.max_retries,
    )

    async def stream(model: str, prompt: str, max_tokens: int, watch: Stopwatch) -> int | None:
        async with client.messages.stream(
            model=model, max_tokens=max_tokens, messages=[{"role": "user", "content": prompt}]
        ) as events:
            async for event in events:
                if event.type == "text":
                    watch.text(event.text)
            message = await events.get_final_message()
        return message.usage.output_tokens

    return DirectClient("anthropic", stream, client.close)


# --- Gemini -------------------------------------------------------------------------------


#: Gemini 3 and later, and the `-latest` aliases: a thinking level, not a budget.
_LEVEL_MODEL = re.compile(r"gemini-(?:[3-9]|[1-9][0-9])|gemini-(?:flash|flash-lite|pro)-latest$")


def gemini_thinking(model: str) -> dict[str, Any] | None:
    """The thinking the gateway asks of `model` for a request without thinking: Gemini 2.5
    budget 0 (2.5 Pro: its least, 128), Gemini 3 and later level LOW, others none."""
    if model.startswith("gemini-2.5"):
        return {"thinking_budget": 128 if model.startswith("gemini-2.5-pro") else 0}
    if _LEVEL_MODEL.match(model):
        return {"thinking_level": "LOW"}
    return None


def _gemini(upstream: Upstream) -> DirectClient:
    from google import genai
    from google.genai import types

    retry = types.HttpRetryOptions(attempts=upstream.max_retries + 1)
    options = types.HttpOptions(
        base_url=upstream.base_url, api_version="v1beta", timeout=int(upstream.timeout_s * 1000), retry_options=retry
    )
    client = genai.Client(api_key=upstream.api_key, http_options=options)

    async def stream(model: str, prompt: str, max_tokens: int, watch: Stopwatch) -> int | None:
        config: dict[str, Any] = {"max_output_tokens": max_tokens}
        thinking = gemini_thinking(model)
        if thinking is not None:
            config["thinking_config"] = thinking
        tokens = None
        async for chunk in await client.aio.models.generate_content_stream(model=model, contents=prompt, config=config):  # type: ignore[arg-type]
            watch.text(chunk.text)
            if chunk.usage_metadata is not None and chunk.usage_metadata.candidates_token_count is not None:
                tokens = chunk.usage_metadata.candidates_token_count
        return tokens

    return DirectClient("gemini", stream, client.aio.aclose)
