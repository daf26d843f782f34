"""`catalog`: the live model list, asked of a loopback upstream in OpenAI's list shape
through the official `openai` SDK, as the providers' `list_models` do. The list changes,
fails, hangs and recovers; the health endpoint, `GET /v1/models` and
`GET /v1/models/{id}` follow it, and the background task ends with the app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx2
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from streamgate import app as server
from streamgate.adapter import ChunkStream
from streamgate.catalog import Catalog, with_default
from streamgate.chat_types import ChatRequest
from streamgate.providers.echo import EchoAdapter
from support import serve, settings


class Upstream:
    """A provider's `GET /v1/models`, as OpenAI answers it; the test changes what it says."""

    def __init__(self, models: list[str]) -> None:
        self.models = models
        self.failing = False
        self.hang_s = 0.0
        self.requests = 0
        self.app = Starlette(routes=[Route("/v1/models", self.list_models)])

    async def list_models(self, request: Request) -> JSONResponse:
        self.requests += 1
        if self.hang_s:
            await asyncio.sleep(self.hang_s)
        if self.failing:
            return JSONResponse({"error": {"message": "The server had an error", "type": "server_error"}}, 500)
        data = [
            {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "system"} for model in self.models
        ]
        return JSONResponse({"object": "list", "data": data})


class ListingAdapter:
    """A provider whose `list_models` asks its upstream through the openai SDK."""

    default_model = "m-default"
    models = ("m-default", "m-built-in")

    def __init__(self, name: str, base_url: str, configured: bool = True) -> None:
        self.name = name
        self.configured = configured
        self.client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="sk-upstream", max_retries=0)

    async def list_models(self) -> list[str]:
        return [model.id async for model in self.client.models.list()]

    async def stream_chat(self, request: ChatRequest) -> ChunkStream:
        raise NotImplementedError

    async def aclose(self) -> None:
        await self.client.close()


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def health(url: str) -> dict[str, list[str]]:
    providers = httpx2.get(url + "/api/v1/chat/stream/health").json()["providers"]
    return {name: entry["models"] for name, entry in providers.items()}


def listed(url: str) -> list[str]:
    return [card["id"] for card in httpx2.get(url + "/v1/models").json()["data"]]


@contextmanager
def gateway(upstream: Upstream, **timing: float) -> Iterator[tuple[str, Catalog]]:
    with serve(upstream.app) as upstream_url:
        adapters = {
            "echo": EchoAdapter(0),
            "listing": ListingAdapter("listing", upstream_url),
            "off": ListingAdapter("off", upstream_url, configured=False),
        }
        catalog = Catalog(adapters, **{"refresh_s": 0.05, "retry_s": 0.05, "timeout_s": 1.0, **timing})
        with serve(server.create_app(settings(), adapters, catalog=catalog)) as url:
            yield url, catalog


def test_the_catalog_follows_the_upstream() -> None:
    upstream = Upstream(["m-a", "m-b", "m-default"])
    with gateway(upstream) as (url, catalog):
        wait_for(lambda: health(url)["listing"] == ["m-default", "m-a", "m-b"])
        assert health(url) == {
            "echo": ["echo"],
            "listing": ["m-default", "m-a", "m-b"],
            "off": ["m-default", "m-built-in"],
        }  # not configured: never asked
        assert listed(url) == ["echo/echo", "listing/m-default", "listing/m-a", "listing/m-b"]
        card = httpx2.get(url + "/v1/models/listing/m-b").json()
        assert card == {"id": "listing/m-b", "created": catalog.created, "owned_by": "listing", "object": "model"}

        upstream.models = ["m-c"]
        wait_for(lambda: listed(url) == ["echo/echo", "listing/m-default", "listing/m-c"])
        assert health(url)["listing"] == ["m-default", "m-c"]
        assert httpx2.get(url + "/v1/models/listing/m-b").status_code == 404
        assert httpx2.get(url + "/v1/models/listing/m-c").status_code == 200

        upstream.failing = True
        failed_from = upstream.requests
        wait_for(lambda: upstream.requests >= failed_from + 3)
        assert health(url)["listing"] == ["m-default", "m-c"]  # the last good list stays

        upstream.models, upstream.failing = ["m-d"], False
        wait_for(lambda: health(url)["listing"] == ["m-default", "m-d"])
        assert listed(url)[-1] == "listing/m-d"
    asked = upstream.requests
    time.sleep(0.2)
    assert upstream.requests == asked  # the task ended with the app


def test_a_failing_upstream_keeps_the_built_in_list(caplog: pytest.LogCaptureFixture) -> None:
    upstream = Upstream(["m-a"])
    upstream.failing = True
    with gateway(upstream, refresh_s=60, retry_s=60) as (url, _):
        wait_for(lambda: upstream.requests == 1)  # at start-up, before any request
        wait_for(lambda: "listing the listing models failed" in caplog.text)
        assert health(url)["listing"] == ["m-default", "m-built-in"]
        assert listed(url) == ["echo/echo", "listing/m-default", "listing/m-built-in"]
    assert upstream.requests == 1  # the next try was an hour (here a minute) away
    [record] = [r for r in caplog.records if r.name == "streamgate.catalog"]
    assert record.getMessage() == (
        "listing the listing models failed, keeping the 2 known: "
        "InternalServerError: Error code: 500 - The server had an error"
    )


def test_a_silent_upstream_times_out_and_is_asked_again() -> None:
    upstream = Upstream(["m-a"])
    upstream.hang_s = 0.5
    with gateway(upstream, timeout_s=0.1) as (url, _):
        wait_for(lambda: upstream.requests >= 2)  # timed out, retried after retry_s
        assert health(url)["listing"] == ["m-default", "m-built-in"]
        upstream.hang_s = 0.0
        wait_for(lambda: health(url)["listing"] == ["m-default", "m-a"])


class OddAdapter(EchoAdapter):
    """A provider whose list is empty, then holds a non-string id."""

    name = "odd"
    answers: list[list[object]] = [[], ["ok", 3]]

    async def list_models(self) -> list[str]:
        return self.answers.pop(0)  # type: ignore[return-value]


@pytest.mark.anyio
async def test_refresh_refuses_an_empty_or_odd_list() -> None:
    catalog = Catalog({"odd": OddAdapter(0)})
    assert (await catalog.refresh(), await catalog.refresh()) == (False, False)
    assert (catalog.models, catalog.version) == ({"odd": ("echo",)}, 0)


@pytest.mark.anyio
async def test_stop_ends_the_task() -> None:
    catalog = Catalog({"echo": EchoAdapter(0)})
    catalog.start()
    task = catalog._task
    await asyncio.sleep(0.01)
    await catalog.stop()
    assert task is not None and task.cancelled() and catalog._task is None
    await catalog.stop()  # idempotent


def test_a_catalog_without_refresh_never_asks() -> None:
    upstream = Upstream(["m-a"])
    with serve(upstream.app) as upstream_url:
        adapters = {"listing": ListingAdapter("listing", upstream_url)}
        catalog = Catalog(adapters, refresh_s=None)
        with serve(server.create_app(settings(), adapters, catalog=catalog)) as url:
            assert health(url) == {"listing": ["m-default", "m-built-in"]}
    assert upstream.requests == 0


def test_with_default() -> None:
    assert with_default("b", ["a", "b", "c", "a"]) == ("b", "a", "c")
    assert with_default("d", []) == ("d",)
