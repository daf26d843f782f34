"""What one app's dialects share: its settings, its adapters, the model catalog and the
resumable streams. Built once by `app.create_app`; each dialect's `routes` takes it."""

from __future__ import annotations

from collections.abc import Mapping

from .adapter import Adapter
from .catalog import Catalog
from .errors import InvalidRequestError, UnknownProviderError
from .resume import Streams
from .settings import Settings


class Gateway:
    __slots__ = ("settings", "adapters", "catalog", "streams")

    def __init__(self, settings: Settings, adapters: Mapping[str, Adapter], catalog: Catalog,
                 streams: Streams) -> None:
        self.settings = settings
        self.adapters = adapters
        self.catalog = catalog
        self.streams = streams

    def adapter(self, provider: str) -> Adapter:
        """The adapter of `provider`; an unknown name is `unknown_provider` listing the valid ones."""
        adapter = self.adapters.get(provider)
        if adapter is None:
            valid = ", ".join(self.adapters)
            raise UnknownProviderError(f"$.provider: unknown provider {provider!r}; valid: {valid}")
        return adapter

    def resolve(self, model: str, default_provider: str) -> tuple[Adapter, str]:
        """The adapter and the provider's model name for a `/v1` dialect's `model`:
        `"<provider>/<model>"` → that provider; a bare name (no slash) → `default_provider`
        (the dialect's own); any other prefix is `unknown_provider` naming the valid ones."""
        provider, slash, name = model.partition("/")
        if not slash:
            provider, name = default_provider, model
        adapter = self.adapters.get(provider)
        if adapter is None:
            valid = ", ".join(self.adapters)
            raise UnknownProviderError(
                f"$.model: {model!r} names provider {provider!r}, which is neither a provider nor a route this "
                f"gateway serves; write the model as <provider>/<model> with a provider of: {valid}")
        if not name:
            raise InvalidRequestError(f"$.model: {model!r} names no model; write it as <provider>/<model>")
        return adapter, name
