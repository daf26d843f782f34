"""streamgate's app under granian, for `python -m bench --targets streamgate,streamgate-granian`.

granian (a maintained Rust HTTP server with an ASGI interface) was measured as a server
beside uvicorn for issue 26 and not adopted: docs/BENCHMARKS.md has the figures and why.
This keeps the comparison one command away; granian is not a dependency of any extra, so
`pip install granian` first.

    HOST=127.0.0.1 PORT=8000 python -m bench.granian_server

The same settings as `python server.py` (the environment, `.env`), served as granian serves
any ASGI app: HTTP/1.1 on uvloop, one worker process forked from this one, which only
watches it. The app is built here, before the fork, so a bad setting ends start-up with
streamgate's one line; granian's own loader cannot import `streamgate.server:app` from the
checkout (the repository root is the package, and granian resolves the target as a path).
"""

from __future__ import annotations

import sys
from typing import Any

from streamgate.server import LOG_CONFIG, app_from_env, settings_or_exit

#: The app, built by `main` before granian forks its worker.
built: Any = None


def load_app(target: str) -> Any:
    """granian's loader, in its worker process: the app built before the fork (a worker
    spawned rather than forked builds its own)."""
    return built if built is not None else app_from_env()


def main() -> None:
    global built
    try:
        from granian.constants import HTTPModes, Interfaces, Loops
        from granian.server import Server
    except ImportError:
        print("bench.granian_server: granian is not installed: pip install granian", file=sys.stderr)
        raise SystemExit(2) from None
    settings = settings_or_exit()
    built = app_from_env()
    server = Server(
        "streamgate.server:app",  # a name for granian's logs; `load_app` provides the app
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,  # with the lifespan: adapters built, `gc.freeze()`
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        websockets=False,
        log_dictconfig=LOG_CONFIG,
        log_access=False,  # the request log is streamgate's own, as under uvicorn
    )
    server.serve(target_loader=load_app)


if __name__ == "__main__":
    main()
