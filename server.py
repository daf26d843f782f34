"""The `streamgate` command and `python server.py`: settings from the command line and
the environment, then the app (`app.create_app`) under uvicorn (uvloop, its httptools
protocol as `http_protocol.HttpProtocol`, graceful SIGTERM), in one process or `WORKERS` of them.

`uvicorn streamgate.server:app` works too: `app` is built from the environment when it
is first asked for (nothing happens when this module is imported), or use
`uvicorn --factory streamgate.app:create_app`.
"""

from __future__ import annotations

if not __package__:  # `python server.py`: run this module as the package's `streamgate.server`
    import runpy

    runpy.run_module("streamgate.server", run_name="__main__", alter_sys=True)
    raise SystemExit(0)

import argparse
import asyncio
import contextlib
import logging
import logging.config
import os
import signal
import socket
import sys
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from types import FrameType
from typing import Any

import uvicorn
import uvicorn.config
from starlette.applications import Starlette
from uvicorn.lifespan.on import LifespanOn

from . import workers
from .app import create_app
from .callers import load_callers
from .config import load_config
from .http_protocol import HttpProtocol
from .providers import PROVIDERS
from .routing import load_routes
from .settings import Settings, SettingsError

#: Command-line options and the variables they override.
OPTIONS = {"host": "HOST", "port": "PORT", "workers": "WORKERS", "config": "STREAMGATE_CONFIG"}


#: The server's log line: when, level, logger, message.
LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LineFormatter(logging.Formatter):
    """`logging.Formatter`, its `%(asctime)s` written as the default one writes it but with
    the date and time made once per second, and `LINE_FORMAT` (its default) written by one
    f-string: the request log writes a line per request."""

    _second = -1
    _date_and_time = ""

    def __init__(self, fmt: str | None = LINE_FORMAT, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)
        self._line_format = fmt == LINE_FORMAT and datefmt is None

    def format(self, record: logging.LogRecord) -> str:
        if not self._line_format or record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        record.message = record.getMessage()
        return f"{self.formatTime(record)} {record.levelname} {record.name}: {record.message}"

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._date_and_time = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        if self.default_msec_format is None:
            return self._date_and_time
        return self.default_msec_format % (self._date_and_time, record.msecs)


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """`logging.StreamHandler`, but the lines logged while an event loop runs in this
    thread reach the stream together, at most `FLUSH_S` later: under load one write carries
    many request-log lines instead of one write (a system call) each. A warning or worse, a
    line logged outside a loop (start-up, another thread) and `flush()` (the app's
    shutdown, logging's at exit) write what waits at once, in order."""

    FLUSH_S = 0.05

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self.waiting: list[str] = []
        #: The event loop that will flush what waits, and its thread (nothing waits: `None`).
        #: A line from that thread while it runs joins the batch without asking for the
        #: running loop (on Python 3.11 `get_running_loop` asks the OS for the pid: a
        #: system call per line).
        self.batching: tuple[asyncio.AbstractEventLoop, int] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)
            return
        waiting = self.waiting
        waiting.append(line)
        if record.levelno >= logging.WARNING:
            self.flush()
            return
        batching = self.batching
        if batching is not None and batching[1] == threading.get_ident() and batching[0].is_running():
            return  # the batch's flush is due already, from this thread's running loop
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if len(waiting) == 1:
            loop.call_later(self.FLUSH_S, self.flush)
            self.batching = (loop, threading.get_ident())

    def flush(self) -> None:
        with self.lock or contextlib.nullcontext():
            if self.waiting:
                lines, self.waiting = "".join(self.waiting), []
                self.batching = None
                self.stream.write(lines)
            super().flush()


#: Logging for the server and each of its workers: uvicorn's own, and every other logger
#: (ours: the request log `streamgate.access`, warnings) at INFO on stderr; `httpx2` logs
#: every upstream request at INFO, so only its warnings.
LOG_CONFIG: dict[str, Any] = {
    **uvicorn.config.LOGGING_CONFIG,
    "formatters": {
        **uvicorn.config.LOGGING_CONFIG["formatters"],
        "streamgate": {"()": LineFormatter},
    },
    "handlers": {
        **uvicorn.config.LOGGING_CONFIG["handlers"],
        "streamgate": {"()": BatchedStreamHandler, "formatter": "streamgate", "stream": "ext://sys.stderr"},
    },
    "loggers": {**uvicorn.config.LOGGING_CONFIG["loggers"], "httpx2": {"level": "WARNING"}},
    "root": {"handlers": ["streamgate"], "level": "INFO"},
}


def package_version() -> str:
    try:
        return version("streamgate")
    except PackageNotFoundError:  # a checkout run without installing it
        return "unknown"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="streamgate",
        description="A lean, fast streaming gateway for LLM chat. Every option overrides its "
        "environment variable; the README lists all of them.",
    )
    parser.add_argument("--version", action="version", version=f"streamgate {package_version()}")
    parser.add_argument("--host", help="the address to listen on (HOST; default 127.0.0.1)")
    parser.add_argument("--port", help="the port to listen on (PORT; default 8000)")
    parser.add_argument("--workers", help="worker processes (WORKERS; default 1)")
    parser.add_argument("--config", metavar="FILE", help="the TOML file of routes and callers (STREAMGATE_CONFIG)")
    return parser.parse_args(argv)


def settings_or_exit() -> Settings:
    """The environment's settings; a bad value ends the process with one line naming the
    variable and status 2."""
    try:
        return Settings.from_env()
    except SettingsError as error:
        print(f"streamgate: cannot start: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def config_or_exit(settings: Settings) -> None:
    """Check the config file's routes and callers before worker processes start (each would
    otherwise fail alone); a problem ends the process with one line naming the file and line,
    status 2."""
    try:
        config = load_config(settings.streamgate_config or "")
        load_routes(config, PROVIDERS)
        load_callers(config, settings.gateway_api_key)
    except SettingsError as error:
        print(f"streamgate: cannot start: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def app_from_env() -> Starlette:
    """`create_app()` with the environment's settings, or the one-line exit."""
    settings = settings_or_exit()
    try:
        return create_app(settings)
    except SettingsError as error:
        print(f"streamgate: cannot start: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def __getattr__(name: str) -> Starlette:
    """`streamgate.server:app` for uvicorn (and each worker process): built on first use."""
    if name == "app":
        built = app_from_env()
        globals()["app"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class GatewayServer(uvicorn.Server):
    """uvicorn's server, where the second SIGTERM forces the exit as a second Ctrl-C does,
    and a forced exit still runs the app's shutdown (uvicorn skips it): the streams still
    open get their failure end at once instead of a cut connection."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGTERM:
            self.force_exit = True
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        lifespan = self.lifespan
        if self.force_exit and isinstance(lifespan, LifespanOn) and not lifespan.shutdown_event.is_set():
            await lifespan.shutdown()


def main(argv: list[str] | None = None) -> None:
    arguments = parse_args(argv)
    for option, variable in OPTIONS.items():
        value = getattr(arguments, option)
        if value is not None:  # the workers read the environment too
            os.environ[variable] = str(value)
    settings = settings_or_exit()
    logging.config.dictConfig(LOG_CONFIG)
    options: dict[str, Any] = dict(
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=HttpProtocol,  # uvicorn's httptools protocol, lighter per open stream (http_protocol.py)
        access_log=False,  # the request log is ours (`ACCESS_LOG`), with what uvicorn cannot know
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        log_config=LOG_CONFIG,  # uvicorn applies it in every worker process too (spawned: none inherit it)
    )
    if settings.workers > 1:
        config_or_exit(settings)
        workers.run_workers(settings, **options)
        return
    served = app_from_env()
    try:
        GatewayServer(uvicorn.Config(served, **options)).run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled, once it is done
        pass


if __name__ == "__main__":
    main()
