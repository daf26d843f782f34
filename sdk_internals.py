"""The start-up check of the private members streamgate calls in its dependencies (the
SDKs' request builders and senders, aiohttp's pool): a release that renamed one fails
when the adapters are built, naming the package and its version, not on the first request.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata


class SDKMismatchError(RuntimeError):
    """A dependency's release lacks a private member streamgate calls."""


def require_internals(distribution: str, owner: object, names: Iterable[str]) -> None:
    """Raise `SDKMismatchError` if `owner` (a client, or a class) lacks any of the
    callables `names`."""
    missing = [name for name in names if not callable(getattr(owner, name, None))]
    if missing:
        kind = owner.__name__ if isinstance(owner, type) else type(owner).__name__
        raise SDKMismatchError(
            f"{distribution} {metadata.version(distribution)} has no {', '.join(missing)} on {kind}; "
            f"streamgate needs a {distribution} release within the range its pyproject.toml pins"
        )
