"""The textbook gateway streamgate replaces, kept as the bench's yardstick.

FastAPI + Pydantic models + sse-starlette's `EventSourceResponse`, and the official SDKs
iterated chunk by typed chunk, written the way the tutorials write it. It serves the same
`POST /api/v1/chat/stream` shape as streamgate so one load client can measure both.
Installed through the `bench` extra only; never imported by streamgate itself.

Run: `uvicorn bench.tutorial_app:app` with `OPENAI_BASE_URL`, `OPENAI_API_KEY` (and the
`ANTHROPIC_*`, `GEMINI_*` pair for the other providers) set.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Literal

from anthropic import AsyncAnthropic
from fastapi import FastAPI
from google import genai
from google.genai import types
from openai import AsyncOpenAI
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse

openai_client = AsyncOpenAI(base_url=os.environ.get("OPENAI_BASE_URL"), api_key=os.environ.get("OPENAI_API_KEY"))
anthropic_client = AsyncAnthropic(
    base_url=os.environ.get("ANTHROPIC_BASE_URL"), api_key=os.environ.get("ANTHROPIC_API_KEY")
)
gemini_client = genai.Client(
    api_key=os.environ.get("GEMINI_API_KEY", "unset"),
    http_options=types.HttpOptions(base_url=os.environ.get("GEMINI_BASE_URL")),
)

app = FastAPI()


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    messages: list[Message] = Field(min_length=1)
    provider: str
    model: str | None = None
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(1024, ge=1)
    thinking_enabled: bool = False


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class StreamChunk(BaseModel):
    content: str
    finish_reason: str | None
    model: str
    provider: str
    usage: Usage | None = None


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/api/v1/chat/stream")
async def chat_stream(request: ChatRequest) -> EventSourceResponse:
    if request.provider == "anthropic":
        chunks = anthropic_chunks(request)
    elif request.provider == "gemini":
        chunks = gemini_chunks(request)
    else:
        chunks = openai_chunks(request)

    async def events() -> AsyncIterator[dict[str, object]]:
        event_id = 0
        async for chunk in chunks:
            event_id += 1
            yield {"id": str(event_id), "event": "message", "data": chunk.model_dump_json()}
        yield {"data": "[DONE]"}

    return EventSourceResponse(events())


async def openai_chunks(request: ChatRequest) -> AsyncIterator[StreamChunk]:
    model = request.model or "gpt-4o"
    stream = await openai_client.chat.completions.create(
        model=model,
        messages=[m.model_dump() for m in request.messages],
        temperature=request.temperature,
        max_tokens=request.max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    finish_reason, usage = "stop", None
    async for chunk in stream:
        if chunk.usage:
            usage = Usage(
                prompt_tokens=chunk.usage.prompt_tokens,
                completion_tokens=chunk.usage.completion_tokens,
                total_tokens=chunk.usage.total_tokens,
            )
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        if choice.delta.content:
            yield StreamChunk(content=choice.delta.content, finish_reason=None, model=model, provider="openai")
        if choice.finish_reason:
            finish_reason = choice.finish_reason
    yield StreamChunk(content="", finish_reason=finish_reason, model=model, provider="openai", usage=usage)


async def anthropic_chunks(request: ChatRequest) -> AsyncIterator[StreamChunk]:
    model = request.model or "claude-sonnet-4-20250514"
    system = "\n".join(m.content for m in request.messages if m.role == "system")
    messages = [m.model_dump() for m in request.messages if m.role != "system"]
    stream = await anthropic_client.messages.create(
        model=model,
        messages=messages,
        max_tokens=request.max_tokens,
        stream=True,
        **({"system": system} if system else {}),
    )
    stop_reason, prompt_tokens, output_tokens = "stop", 0, 0
    async for event in stream:
        if event.type == "message_start":
            prompt_tokens = event.message.usage.input_tokens
        elif event.type == "content_block_delta" and event.delta.type == "text_delta":
            yield StreamChunk(content=event.delta.text, finish_reason=None, model=model, provider="anthropic")
        elif event.type == "message_delta":
            output_tokens = event.usage.output_tokens
            stop_reason = {"max_tokens": "length", "tool_use": "tool_calls"}.get(event.delta.stop_reason, "stop")
    usage = Usage(
        prompt_tokens=prompt_tokens, completion_tokens=output_tokens, total_tokens=prompt_tokens + output_tokens
    )
    yield StreamChunk(content="", finish_reason=stop_reason, model=model, provider="anthropic", usage=usage)


async def gemini_chunks(request: ChatRequest) -> AsyncIterator[StreamChunk]:
    model = request.model or "gemini-2.5-flash"
    contents = [
        types.Content(role="model" if m.role == "assistant" else "user", parts=[types.Part(text=m.content)])
        for m in request.messages
        if m.role != "system"
    ]
    config = types.GenerateContentConfig(temperature=request.temperature, max_output_tokens=request.max_tokens)
    finish_reason, usage = "stop", None
    async for chunk in await gemini_client.aio.models.generate_content_stream(
        model=model, contents=contents, config=config
    ):
        if chunk.usage_metadata and chunk.usage_metadata.candidates_token_count is not None:
            meta = chunk.usage_metadata
            usage = Usage(
                prompt_tokens=meta.prompt_token_count or 0,
                completion_tokens=meta.candidates_token_count,
                total_tokens=meta.total_token_count or 0,
            )
        candidate = chunk.candidates[0] if chunk.candidates else None
        if candidate is None:
            continue
        text = (
            "".join(p.text for p in (candidate.content.parts or []) if p.text and not p.thought)
            if candidate.content
            else ""
        )
        if text:
            yield StreamChunk(content=text, finish_reason=None, model=model, provider="gemini")
        if candidate.finish_reason:
            finish_reason = "length" if candidate.finish_reason == "MAX_TOKENS" else "stop"
    yield StreamChunk(content="", finish_reason=finish_reason, model=model, provider="gemini", usage=usage)
