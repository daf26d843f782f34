"""Where a chat request's time went: the gateway's own, and the upstream's.

`RequestTiming` holds a request's timestamps (`time.monotonic()`): when it reached the
gateway, when its first upstream request was about to be written, when the upstream's
response head arrived, when our response head went out. The pipeline makes one per request
(`pipeline.StreamProgress` is one) and puts it in `REQUEST_TIMING` while the upstream is opened;
the upstream transport (`upstream_http.py`) finds it there and notes its two timestamps,
so no adapter has to pass anything along. From them: the `Server-Timing` header of every
chat answer, and the `streamgate_gateway_overhead_seconds` histogram.

`tracer` is the optional OpenTelemetry hook: `None` (nothing of OpenTelemetry imported)
unless the SDK's own `OTEL_*` variables configure an exporter and the extra is installed;
then `install_tracing` imports `tracing.py` and sets it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .tracing import RequestTrace, Tracer

log = logging.getLogger("streamgate")


class RequestTiming:
    """One chat request's timestamps (monotonic seconds); `None`: not (yet) happened."""

    __slots__ = (
        "head_sent_at",
        "started_at",
        "trace",
        "upstream_done_at",
        "upstream_head_at",
        "upstream_written_at",
    )

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at  # the request reached the gateway
        self.upstream_written_at: float | None = None  # the first upstream request was about to be written
        self.upstream_head_at: float | None = None  # the upstream's (last) response head arrived
        #: The gateway stopped waiting on the upstream before sending its own head: the upstream's
        #: head for a stream, the end of the upstream's answer for a JSON answer.
        self.upstream_done_at: float | None = None
        self.head_sent_at: float | None = None  # our response head went out
        self.trace: RequestTrace | None = None  # the request's span, when tracing is on

    def server_timing(self, now: float) -> bytes:
        """`Server-Timing: gateway;dur=<ms>, upstream;dur=<ms>` at `now`, the moment our head
        goes out: the gateway's time until the upstream request was written (all of it when
        none was), then the upstream's until its response head (until `now` if none came)."""
        written = self.upstream_written_at
        if written is None:
            return b"gateway;dur=%.2f, upstream;dur=0" % ((now - self.started_at) * 1000)
        head = self.upstream_head_at or now
        return b"gateway;dur=%.2f, upstream;dur=%.2f" % ((written - self.started_at) * 1000, (head - written) * 1000)

    def gateway_overhead(self) -> float | None:
        """The gateway's own seconds up to its response head, upstream waiting excluded: the
        time before the upstream request was written plus the time from the end of the
        upstream wait (`upstream_done_at`) to our head. `None` when no head was sent."""
        sent = self.head_sent_at
        if sent is None:
            return None
        written = self.upstream_written_at
        if written is None:
            return sent - self.started_at
        done = self.upstream_done_at or self.upstream_head_at
        return written - self.started_at + (sent - done if done is not None and done <= sent else 0.0)


#: The timing of the chat request running in this task (and its child tasks).
REQUEST_TIMING: ContextVar[RequestTiming | None] = ContextVar("streamgate_request_timing", default=None)

#: The request tracer, set by `install_tracing` when OpenTelemetry is configured.
tracer: Tracer | None = None

#: The SDK's variables that name where traces go: any of them turns tracing on.
_EXPORTER_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def otel_configured(environ: Mapping[str, str]) -> bool:
    """Whether the OpenTelemetry SDK's own variables configure an exporter: an OTLP
    endpoint, or `OTEL_TRACES_EXPORTER` naming one (`none` or unset: off)."""
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return any(environ.get(name) for name in _EXPORTER_VARIABLES)


def install_tracing(environ: Mapping[str, str] = os.environ) -> Tracer | None:
    """Turn tracing on when `otel_configured` (once per process); the tracer, or `None`.
    Without the extra (`pip install streamgate[otel]`), a warning and tracing stays off."""
    global tracer
    if tracer is not None or not otel_configured(environ):
        return tracer
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    try:
        from .tracing import Tracer
    except ImportError as error:
        log.warning(
            "OTEL_* variables are set but OpenTelemetry is not installed (pip install "
            "'streamgate[otel]'): tracing is off (%s)",
            error,
        )
        return None
    tracer = Tracer.from_environment(environ)
    return tracer
