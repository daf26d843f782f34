"""Gemini `streamGenerateContent?alt=sse` wire bytes for tests, and the official
`google-genai` SDK reading them.

`frame` builds one `GenerateContentResponse` of the stream (candidate 0 with its parts,
`usageMetadata`, `modelVersion`, `responseId`); `sse_body` frames them as Gemini does
(`data: <json>` ended by CRLF CRLF). `sdk_stream` proves a scripted body is Gemini's wire
(the SDK's own `generate_content_stream` parses it); `sdk_request` reads a request body
we sent into the SDK's own types (they forbid unknown fields).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx2
from google import genai
from google.genai import types as genai_types


def usage_metadata(prompt: int = 9, candidates: int | None = 12, thoughts: int | None = 27) -> dict[str, Any]:
    usage: dict[str, Any] = {"promptTokenCount": prompt}
    if candidates is not None:
        usage["candidatesTokenCount"] = candidates
    usage["totalTokenCount"] = prompt + (candidates or 0) + (thoughts or 0)
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if thoughts is not None:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def frame(
    *parts: dict[str, Any],
    finish_reason: str | None = None,
    usage: dict[str, Any] | None = None,
    model_version: str = "gemini-2.5-flash",
    **extra: Any,
) -> dict[str, Any]:
    """One `GenerateContentResponse` of the stream: candidate 0 with `parts`."""
    candidate: dict[str, Any] = {}
    if parts:
        candidate["content"] = {"parts": list(parts), "role": "model"}
    if finish_reason is not None:
        candidate["finishReason"] = finish_reason
    candidate["index"] = 0
    body: dict[str, Any] = {"candidates": [candidate]}
    body["usageMetadata"] = usage or usage_metadata(candidates=None, thoughts=None)
    body.update(modelVersion=model_version, responseId="mW0jaNXcLsWgz7IPpcCbmQo", **extra)
    return body


def text(value: str) -> dict[str, Any]:
    return {"text": value}


def thought(value: str) -> dict[str, Any]:
    return {"text": value, "thought": True}


def function_call(name: str, args: dict[str, Any] | None, signature: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": name, **({"args": args} if args is not None else {})}}
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def sse_body(*frames: dict[str, Any] | bytes) -> bytes:
    """`data: <json>` events ended by CRLF CRLF, as Gemini's `alt=sse` sends them."""
    return b"".join(
        f if isinstance(f, bytes) else b"data: " + json.dumps(f, ensure_ascii=False).encode() + b"\r\n\r\n"
        for f in frames
    )


def sdk_stream(body: bytes) -> list[genai_types.GenerateContentResponse]:
    """What `google-genai`'s own `generate_content_stream` makes of a scripted `alt=sse` body."""

    async def read() -> list[genai_types.GenerateContentResponse]:
        transport = httpx2.MockTransport(
            lambda _: httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)
        )
        async with httpx2.AsyncClient(transport=transport) as http:
            client = genai.Client(
                api_key="AIzaSy-proof",
                vertexai=False,
                http_options=genai_types.HttpOptions(
                    base_url="https://gemini.proof.test", api_version="v1beta", httpx_async_client=http
                ),
            )
            stream = await client.aio.models.generate_content_stream(model="gemini-2.5-flash", contents="Hi")
            return [response async for response in stream]

    return asyncio.run(read())


def sdk_request(body: dict[str, Any]) -> dict[str, Any]:
    """The request body we sent, read into the SDK's own types from its JSON (unknown or
    misspelled fields fail: the types forbid extras; bytes fields are base64-decoded)."""
    types = {
        "contents": genai_types.Content,
        "systemInstruction": genai_types.Content,
        "tools": genai_types.Tool,
        "toolConfig": genai_types.ToolConfig,
        "generationConfig": genai_types.GenerationConfig,
    }
    assert set(body) <= set(types)
    return {
        key: [types[key].model_validate_json(json.dumps(item)) for item in value]
        if isinstance(value, list)
        else types[key].model_validate_json(json.dumps(value))
        for key, value in body.items()
    }
