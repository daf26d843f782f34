"""Shared fixtures. Helpers that tests import live in `support.py`."""

import gc

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_garbage_from_other_loops(request: pytest.FixtureRequest) -> None:
    """Before an async test, collect what earlier tests left unreachable, while no loop runs.

    An SDK client nobody closed (the openai SDK's own httpx client) closes itself in
    `__del__` by scheduling `aclose()` on whichever loop is running then: collected during
    another test's loop, that close touches sockets of a loop long gone and fails that
    unrelated test with "Event loop is closed". Collected here, it finds no loop and stays
    quiet."""
    if request.node.get_closest_marker("anyio") is not None:
        gc.collect()
