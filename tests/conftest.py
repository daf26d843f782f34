"""Shared fixtures. Helpers that tests import live in `support.py`."""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
