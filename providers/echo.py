"""The built-in `echo` provider: no key, no network.

Streams the last user message back word by word (the whitespace after each word stays
with it, so the concatenated content is exactly the message), `ECHO_DELAY_MS` apart.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator

from streamgate.providers.base import ChunkStream
from streamgate.errors import ModelNotSupportedError
from streamgate.chat_types import ChatRequest, FinishReason, StreamChunk, Usage

_WORD = re.compile(r"\s*\S+\s*|\s+")


class EchoAdapter:
    name = "echo"
    default_model = "echo"
    configured = True
    models = ("echo",)

    def __init__(self, delay_ms: float = 20.0) -> None:
        self.delay_s = delay_ms / 1000

    async def stream_chat(self, request: ChatRequest) -> ChunkStream:
        model = request.model or self.default_model
        if model not in self.models:
            raise ModelNotSupportedError(
                f"model {model!r} is not supported by echo; supported: echo", provider=self.name
            )
        text = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
        prompt_words = sum(len(m.text.split()) for m in request.messages)
        return ChunkStream(self._words(text, model, prompt_words))

    async def _words(self, text: str, model: str, prompt_words: int) -> AsyncGenerator[StreamChunk, None]:
        words = _WORD.findall(text)
        for index, word in enumerate(words):
            if index and self.delay_s:
                await asyncio.sleep(self.delay_s)
            yield StreamChunk(word, None, model, self.name)
        usage = Usage.of(prompt_words, len(text.split()))
        yield StreamChunk("", FinishReason.STOP, model, self.name, usage)

    async def list_models(self) -> list[str]:
        return list(self.models)

    async def aclose(self) -> None:
        return None
