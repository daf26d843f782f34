"""One loopback upstream speaking all four providers' HTTP, and a gateway pointed at it.

`ProviderUpstream` is a real HTTP/1.1 server on 127.0.0.1: OpenAI and Together are
reached at `<url>/v1`, Anthropic and Gemini at its root, exactly as their SDKs address
them. Each request gets the next scripted reply (a provider's stream, sent as small
`transfer-encoding: chunked` pieces so events straddle reads); `seen` holds what each
SDK sent, path and JSON body. `providers_gateway` runs our app with the real adapters
(`build_adapters`, nothing injected) configured for that upstream; `text_stream` is a
plain answer in any of the four wires.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from streamgate.app import create_app
from support import serve, settings
from wire_anthropic import MESSAGE_STOP, message_delta, message_start, text_block
from wire_gemini import frame, text, usage_metadata
from wire_gemini import sse_body as gemini_body
from wire_openai import SSE_HEAD, LoopbackUpstream, completion, http_chunk, sse_body
from wire_together import together_chunk

#: Bytes per HTTP chunk of a scripted stream: UTF-8 characters and events straddle chunks.
PIECE = 61


class Sent:
    """A request as the upstream received it: its path (and query), headers (names in
    lower case) and body, as bytes and as JSON."""

    def __init__(self, raw: bytes) -> None:
        head, _, body = raw.partition(b"\r\n\r\n")
        self.path = head.split(b" ", 2)[1].decode()
        lines = head.decode("latin-1").split("\r\n")[1:]
        self.headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        self.body = body
        self.json: dict[str, Any] = json.loads(body)


class ProviderUpstream:
    """Answers each request with the next scripted `(status, body)`; a 200 body streams
    as `text/event-stream`, a JSON object or any other status as `application/json`."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, bytes]] = []
        self.loopback = LoopbackUpstream(self._answer)

    def script(self, *bodies: bytes | tuple[int, bytes]) -> ProviderUpstream:
        """The replies for the next requests (a plain body is a 200 stream); forget what was seen."""
        self.replies = [body if isinstance(body, tuple) else (200, body) for body in bodies]
        self.loopback.requests.clear()
        return self

    @property
    def seen(self) -> list[Sent]:
        return [Sent(raw) for raw in self.loopback.requests]

    async def _answer(self, writer: asyncio.StreamWriter) -> None:
        status, body = self.replies.pop(0)
        if status == 200 and not body.startswith(b"{"):  # a stream; a JSON object is a whole answer
            pieces = (http_chunk(body[i : i + PIECE]) for i in range(0, len(body), PIECE))
            writer.write(SSE_HEAD + b"".join(pieces) + b"0\r\n\r\n")
        else:
            writer.write(
                b"HTTP/1.1 %d Answer\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
                % (status, len(body), body)
            )
        await writer.drain()


KEYS = {
    "openai_api_key": "sk-e2e-openai",
    "anthropic_api_key": "sk-ant-e2e",
    "gemini_api_key": "AIzaSy-e2e",
    "together_api_key": "together-e2e",
}


@contextmanager
def providers_gateway() -> Iterator[tuple[str, ProviderUpstream]]:
    """Our app (every provider configured, no retries) in front of one `ProviderUpstream`:
    its base URL and the upstream."""
    upstream = ProviderUpstream()
    with upstream.loopback.running():
        v1 = upstream.loopback.url
        root = v1.removesuffix("/v1")
        config = settings(
            **KEYS,
            openai_base_url=v1,
            together_base_url=v1,
            anthropic_base_url=root,
            gemini_base_url=root,
            upstream_max_retries=0,
        )
        with serve(create_app(config)) as url:
            yield url, upstream


def text_stream(provider: str, pieces: list[str], usage: tuple[int, int] = (9, 12)) -> bytes:
    """A plain streamed answer of `pieces` in `provider`'s wire, with `usage` (prompt,
    completion tokens) at its end."""
    prompt, output = usage
    if provider == "openai":
        return completion(pieces, usage=usage)
    if provider == "llama4":
        end = {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output}
        return sse_body([*(together_chunk(p) for p in pieces), together_chunk("", "eos", end)])
    if provider == "anthropic":
        return b"".join(
            [message_start(prompt), *text_block(0, pieces), message_delta("end_turn", output), MESSAGE_STOP]
        )
    return gemini_body(
        *(frame(text(p)) for p in pieces),
        frame(text(""), finish_reason="STOP", usage=usage_metadata(prompt, output, None)),
    )
