"""What one app's dialects share: its settings, its adapters, the model catalog, the
resumable streams and the model routes of the config file. Built once by
`app.create_app`; each dialect's `routes` takes it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import msgspec

from .adapter import Adapter, ChunkStream
from .catalog import Catalog
from .chat_types import ChatRequest
from .errors import InvalidRequestError, UnknownProviderError
from .resume import Streams
from .routing import Route, RouteOpener, Target, TargetOpener
from .settings import Settings

__all__ = ["Gateway", "Target", "TargetOpener"]


class Gateway:
    __slots__ = ("settings", "adapters", "catalog", "streams", "routes")

    def __init__(
        self,
        settings: Settings,
        adapters: Mapping[str, Adapter],
        catalog: Catalog,
        streams: Streams,
        routes: Mapping[str, Route] | None = None,
    ) -> None:
        self.settings = settings
        self.adapters = adapters
        self.catalog = catalog
        self.streams = streams
        self.routes: Mapping[str, Route] = routes or {}

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
                f"gateway serves; write the model as <provider>/<model> with a provider of: {valid}"
            )
        if not name:
            raise InvalidRequestError(f"$.model: {model!r} names no model; write it as <provider>/<model>")
        return adapter, name

    def targets(self, model: str, default_provider: str) -> list[Target]:
        """Where `model` may be served, in order: a route's targets when `model` names a
        route, else the one target `resolve` finds."""
        route = self.routes.get(model)
        if route is not None:
            return list(route.targets)
        return [Target(*self.resolve(model, default_provider))]

    def opener(self, targets: list[Target], open_target: TargetOpener) -> Callable[[], Awaitable[ChunkStream]]:
        """`Call.open` over `targets`, each opened with `open_target`: a route's by its
        strategy (`routing.RouteOpener`: fallback or hedge, breakers, what served noted
        for the headers and the log); a plain target opened directly."""
        first = targets[0]
        if first.route is not None:
            return RouteOpener(first.route, targets, open_target)
        return lambda: open_target(first)


def translated(request: ChatRequest) -> TargetOpener:
    """Opens a target with our `request`, named for that target's provider and model (the
    request as it is when it names them already: no copy on the plain path)."""

    def open_target(target: Target) -> Awaitable[ChunkStream]:
        adapter = target.adapter
        if request.provider == adapter.name and request.model == target.model:
            return adapter.stream_chat(request)
        return adapter.stream_chat(msgspec.structs.replace(request, provider=adapter.name, model=target.model))

    return open_target
