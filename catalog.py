"""The live model catalog: the models each configured provider lists, asked in the
background, never on a request's path.

At start-up (the app's lifespan) one task asks every configured adapter for its models
(`adapter.list_models()`, the provider's own list-models endpoint) and asks again every
`refresh_s` (an hour). A provider that fails (an error, a timeout, an empty list) keeps
the list it had — at first the adapter's built-in `models` — and every failed round is
retried after `retry_s` (a minute). A list always starts with the provider's default
model. The health endpoint, `GET /v1/models` and the page read `Catalog.models`;
`version` changes whenever a list does, so readers can cache what they build from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping

from .adapter import Adapter
from .settings import redacted

log = logging.getLogger("streamgate.catalog")

REFRESH_S = 3600.0
RETRY_S = 60.0
LIST_TIMEOUT_S = 30.0


class Catalog:
    """Every provider's models (`models[name]`, the default first), kept fresh by one
    background task between `start()` and `stop()`. With `refresh_s=None` no provider is
    ever asked and the built-in lists stay (for an upstream that serves chats only, as a
    scripted test upstream does)."""

    def __init__(
        self,
        adapters: Mapping[str, Adapter],
        *,
        refresh_s: float | None = REFRESH_S,
        retry_s: float = RETRY_S,
        timeout_s: float = LIST_TIMEOUT_S,
    ) -> None:
        self.adapters = adapters
        self.refresh_s = refresh_s
        self.retry_s = retry_s
        self.timeout_s = timeout_s
        self.models: dict[str, tuple[str, ...]] = {
            name: with_default(adapter.default_model, adapter.models) for name, adapter in adapters.items()
        }
        self.version = 0
        #: When the catalog was made: the `created` of every `/v1/models` card.
        self.created = int(time.time())
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.refresh_s is not None:
            self._task = asyncio.get_running_loop().create_task(self._run(self.refresh_s), name="model catalog")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, refresh_s: float) -> None:
        while True:
            answered = await self.refresh()
            await asyncio.sleep(refresh_s if answered else self.retry_s)

    async def refresh(self) -> bool:
        """Ask each configured provider once (all at once); True when every one answered."""
        configured = [(name, adapter) for name, adapter in self.adapters.items() if adapter.configured]
        listed = await asyncio.gather(*(self._list(name, adapter) for name, adapter in configured))
        for (name, adapter), names in zip(configured, listed, strict=True):
            if names is None:
                continue
            models = with_default(adapter.default_model, names)
            if models != self.models[name]:
                self.models[name] = models
                self.version += 1
        return all(models is not None for models in listed)

    async def _list(self, name: str, adapter: Adapter) -> list[str] | None:
        """The provider's model ids, or None (logged once) when it could not say."""
        try:
            async with asyncio.timeout(self.timeout_s):
                models = await adapter.list_models()
            if not models or not all(isinstance(model, str) and model for model in models):
                raise ValueError(f"the list holds no models or a non-string id: {models!r:.200}")
        except Exception as error:  # noqa: BLE001 - any failure keeps the last list
            log.warning(
                "listing the %s models failed, keeping the %d known: %s: %s",
                name,
                len(self.models[name]),
                type(error).__name__,
                redacted(str(error)[:300]) or "no answer in time",
            )
            return None
        return models


def with_default(default: str, models: Iterable[str]) -> tuple[str, ...]:
    """`models` in their order, the default first, each once."""
    return tuple(dict.fromkeys((default, *models)))
