"""Running the server as `WORKERS` uvicorn worker processes on one port.

With several workers, `/metrics` must add them all up: prometheus-client's multiprocess
mode, switched on by `PROMETHEUS_MULTIPROC_DIR` (a fresh temporary directory, set here
before the workers start, removed when they are gone). Each worker imports the app by
its import string (`streamgate.server:app`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

from .settings import Settings

log = logging.getLogger("streamgate")

APP_IMPORT_STRING = "streamgate.server:app"
#: Seconds a worker may take to answer the parent's health check; a worker starting on a
#: busy machine imports three SDKs first (uvicorn's default, 5, kills it in a loop).
WORKER_HEALTHCHECK_S = 60


def run_workers(settings: Settings, **uvicorn_options: Any) -> None:
    """`uvicorn.run` the app in `settings.workers` processes (one process: `server.main`)."""
    import uvicorn

    if not settings.redis_url:
        log.warning(
            "WORKERS=%d without REDIS_URL: a resumable stream can be resumed only on the worker that "
            "started it; set REDIS_URL to share them",
            settings.workers,
        )
    with tempfile.TemporaryDirectory(prefix="streamgate-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        uvicorn.run(
            APP_IMPORT_STRING,
            workers=settings.workers,
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
            **uvicorn_options,
        )
