"""The HTTP client the Stainless SDKs (openai, anthropic) are handed: their own documented
aiohttp transport (`openai.DefaultAioHttpClient`, vendored `httpx_aiohttp`), with a pool
sized for thousands of concurrent streams.

Why aiohttp: measured under `python -m bench` on one core, the SDK's default httpx2
transport (httpcore2 + h11, pure Python) cost ~1.4 ms of CPU per request and ~20 µs per
frame read; aiohttp's C HTTP parser cuts both by more than half.

Two details of the vendored transport are set right here:
- Its pool is `aiohttp.TCPConnector(limit=max_connections)`: the SDKs' default limit of
  1,000 would queue the 1,001st concurrent stream, so it is raised.
- It maps every `aiohttp.ClientConnectionError` (a reset, a server that hung up) to
  `httpx2.ConnectTimeout`, which would make a dropped connection a 504 `upstream_timeout`.
  `_RemappedTransport` turns those into `httpx2.ConnectError` / `httpx2.ReadError`
  (502 `upstream_error`, as with httpx2), keeping real timeouts as timeouts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import httpx2
from openai import DefaultAioHttpClient
from openai._vendor.httpx_aiohttp.transport import AiohttpResponseStream, AiohttpTransport

from providers.settings import Settings

#: Concurrent upstream connections per SDK client (aiohttp's `limit`), and idle ones kept.
POOL_LIMITS = httpx2.Limits(max_connections=100_000, max_keepalive_connections=1_000, keepalive_expiry=30)


def sdk_http_client(settings: Settings) -> httpx2.AsyncClient:
    """One long-lived client for one SDK client (create it at start-up, never per request)."""
    return DefaultAioHttpClient(timeout=httpx2.Timeout(settings.upstream_timeout_s), limits=POOL_LIMITS,
                                transport=_RemappedTransport(limits=POOL_LIMITS))


def _is_timeout(error: BaseException | None) -> bool:
    return isinstance(error, asyncio.TimeoutError | TimeoutError)


#: Where our transport leaves the aiohttp body stream, in the `httpx2.Response`'s extensions.
_RAW_STREAM = "streamgate.raw_stream"


def body_chunks(response: httpx2.Response) -> AsyncIterator[bytes]:
    """The body's bytes as they arrive.

    From aiohttp directly when the response came through our transport and is not
    content-encoded: one async-generator hop per read instead of httpx2's four
    (`aiter_bytes` → `aiter_raw` → its bound stream → ours), which is CPU per read and
    memory per open stream. Otherwise (a test's `MockTransport`, a gzip body) httpx2's
    `aiter_bytes`. Closing `response` still releases the connection either way.
    """
    stream = response.extensions.get(_RAW_STREAM)
    if stream is not None and "content-encoding" not in response.headers:
        return stream.__aiter__()  # type: ignore[no-any-return]
    return response.aiter_bytes()


class _Stream(AiohttpResponseStream):
    """The body's bytes as they arrive; a dropped connection is a `ReadError`."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._aiohttp_response.content.iter_any():
                yield chunk
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as error:
            if _is_timeout(error):
                raise httpx2.ReadTimeout(str(error)) from error
            raise httpx2.ReadError(str(error)) from error
        except asyncio.TimeoutError as error:
            raise httpx2.ReadTimeout(str(error)) from error


class _RemappedTransport(AiohttpTransport):
    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            response = await super().handle_async_request(request)
        except httpx2.ConnectTimeout as error:
            if _is_timeout(error.__cause__):
                raise
            raise httpx2.ConnectError(str(error)) from error.__cause__
        stream = _Stream(response.stream._aiohttp_response)  # type: ignore[attr-defined]
        response.stream = stream
        response.extensions[_RAW_STREAM] = stream
        return response
