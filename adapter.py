"""The adapter interface every provider implements, and what they share: the opened
stream handle, the retry policy for opening it, and the model list's order.

The request path calls `await adapter.stream_chat(request)`: that call returns once the
upstream has answered with its success status (or raises a `GatewayError` from the
contract's table), so the server knows before the first frame whether to send a `200`.
The returned `ChunkStream` is then iterated for chunks (`chat_types.Chunk`) and always
`aclose()`d, which releases the upstream connection even if iteration never started.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Protocol, TypeVar

from . import metrics
from .chat_types import ChatRequest, Chunk
from .errors import GatewayError

T = TypeVar("T")


class ChunkStream:
    """An opened upstream stream: iterate it for chunks, `aclose()` it to let go.

    The last chunk an adapter yields is the one with a `finish_reason`; an exception
    raised while iterating is a failure after the `200` (an error frame follows).
    """

    __slots__ = ("_chunks", "_release")

    def __init__(
        self,
        chunks: AsyncGenerator[Chunk, None],
        release: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._chunks = chunks
        self._release = release

    def __aiter__(self) -> AsyncGenerator[Chunk, None]:
        return self._chunks

    async def aclose(self) -> None:
        """Stop the chunk generator and release the upstream response. Idempotent."""
        try:
            await self._chunks.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                await release()


class Adapter(Protocol):
    """One provider. Instances are created once at start-up and live as long as the app."""

    name: str
    default_model: str

    @property
    def configured(self) -> bool:
        """Whether the provider's key is set (never calls the upstream)."""
        ...

    @property
    def models(self) -> tuple[str, ...]:
        """Every model this gateway knows for the provider, the default first."""
        ...

    async def stream_chat(self, request: ChatRequest) -> ChunkStream:
        """Open the upstream; raise a `GatewayError` if it does not accept the request."""
        ...

    async def list_models(self) -> list[str]:
        """The model ids the provider's own list-models endpoint names (through its SDK),
        for the catalog; called in the background, never on a request's path. Raises on
        any failure (the catalog then keeps the list it had)."""
        ...

    async def aclose(self) -> None:
        """Close the long-lived SDK client (at shutdown)."""
        ...


async def open_with_retries(
    open_once: Callable[[], Awaitable[T]], *, max_retries: int, provider: str | None = None
) -> T:
    """Call `open_once` until it succeeds, retrying retryable `GatewayError`s.

    Only the opening of a stream is retried, never a stream that has yielded text
    (that would duplicate it). `Retry-After` (seconds) is honoured, else exponential
    backoff with jitter. Each retry is counted in `metrics` under `provider` (else the
    error's own `provider`).
    """
    attempt = 0
    while True:
        try:
            return await open_once()
        except GatewayError as error:
            if not error.retryable or attempt >= max_retries:
                raise
            metrics.record_retry(provider or error.provider)
            await asyncio.sleep(retry_delay(error.retry_after, attempt))
            attempt += 1


def retry_delay(retry_after: str | None, attempt: int) -> float:
    """Seconds to wait before retry number `attempt + 1`."""
    if retry_after:
        try:
            return min(max(float(retry_after), 0.0), 60.0)
        except ValueError:
            pass  # an HTTP-date: fall back to backoff
    return min(0.25 * 2.0**attempt, 8.0) * (0.5 + random.random() / 2)


def default_first(default: str, models: tuple[str, ...]) -> tuple[str, ...]:
    """A provider's model list with its default model first, and once."""
    return (default, *(model for model in models if model != default))
