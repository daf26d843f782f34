"""`route_path`: a request's path as the router matches it, the ASGI `root_path` removed.

Copied from Starlette's private `starlette._utils.get_route_path` (Starlette 0.47), so the
guards see exactly the path the router routes without reaching into Starlette's internals.
Starlette is Copyright © 2018, Encode OSS Ltd., BSD 3-Clause licence:
https://github.com/encode/starlette/blob/master/LICENSE.md
"""

from __future__ import annotations

from starlette.types import Scope


def route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root_path = scope.get("root_path", "")
    if not root_path or not path.startswith(root_path):
        return path
    if path == root_path:
        return ""
    if path[len(root_path)] == "/":
        return path[len(root_path) :]
    return path
