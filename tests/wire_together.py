"""Together's OpenAI-compatible chunk bytes (what the `llama4` provider reads) for tests."""

from __future__ import annotations

from typing import Any

MAVERICK = "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8"


def together_chunk(
    content: str,
    finish_reason: str | None = None,
    usage: dict[str, int] | None = None,
    model: str = MAVERICK,
    **delta: Any,
) -> dict[str, Any]:
    """A chunk as Together streams it: `text` and `token_id` beside the OpenAI fields, the
    role on every delta, `eos` at the end, the usage on the last choice-carrying chunk
    (`delta`: more delta fields, e.g. `tool_calls` or `reasoning`)."""
    return {
        "id": "nq8Rsbx-62bZhn-8f3c3b1e0b0c1a2d",
        "object": "chat.completion.chunk",
        "created": 1734000000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "text": content,
                "logprobs": None,
                "finish_reason": finish_reason,
                "seed": None,
                "delta": {"token_id": 12345, "role": "assistant", "content": content, "tool_calls": None, **delta},
            }
        ],
        "usage": usage,
    }
