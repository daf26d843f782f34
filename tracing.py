"""OpenTelemetry for chat requests, by the GenAI semantic conventions: imported only when
the SDK's own `OTEL_*` variables configure an exporter (`timing.install_tracing`), from the
extra `streamgate[otel]`.

Per chat request one span, `{gen_ai.operation.name} {gen_ai.request.model}` (kind SERVER),
a child of the client's `traceparent` when it sent one; per upstream HTTP attempt (a retry
is another) one child span (kind CLIENT) whose context goes upstream as `traceparent`. The
request span is started when the request is decoded and ended with the request
(`pipeline.end_request`); an attempt span from the upstream request's start to its response
head (`upstream_http.py`). Nothing happens per frame. At the request's end the conventions'
metrics are recorded: `gen_ai.client.operation.duration`, `gen_ai.client.token.usage`,
`gen_ai.server.time_to_first_token`, `gen_ai.server.request.duration`.

The providers are our own, not OpenTelemetry's globals (an SDK with its own
instrumentation, like anthropic's, is not switched on by them). The exporters are OTLP over
HTTP/protobuf (or the console's, `OTEL_TRACES_EXPORTER=console`); the SDK reads the rest of
its variables itself: `OTEL_EXPORTER_OTLP_*`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_BSP_*`, `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_TRACES_SAMPLER`. No prompt or answer text
is ever recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import yarl
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from starlette.types import Scope

    from .pipeline import Call, StreamProgress

log = logging.getLogger("streamgate")

#: Our provider names → the conventions' `gen_ai.provider.name`.
PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini", "llama4": "together_ai"}
OPERATION = "chat"

#: The conventions' advised histogram buckets (seconds; tokens).
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)

_propagator = TraceContextTextMapPropagator()
_TRACE_HEADERS = (b"traceparent", b"tracestate")


def _exporter(environ: Mapping[str, str]) -> SpanExporter | None:
    kind = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if kind == "console":
        return ConsoleSpanExporter()
    if kind != "otlp":
        log.warning("OTEL_TRACES_EXPORTER=%s is not supported here (otlp, console): traces are off", kind)
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _metric_reader(environ: Mapping[str, str]) -> MetricReader | None:
    kind = environ.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower()
    if kind == "console":
        return PeriodicExportingMetricReader(ConsoleMetricExporter())
    if kind != "otlp":
        return None
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter,
    )

    return PeriodicExportingMetricReader(OTLPMetricExporter())


class Tracer:
    """The process's tracer and meter: makes one `RequestTrace` per chat request."""

    def __init__(self, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.tracer = tracer_provider.get_tracer("streamgate")
        meter = meter_provider.get_meter("streamgate")
        self.operation_duration = meter.create_histogram(
            "gen_ai.client.operation.duration", "s", "GenAI operation duration: the upstream's, from its request "
            "to the end of its answer", explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage", "{token}", "Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)
        self.time_to_first_token = meter.create_histogram(
            "gen_ai.server.time_to_first_token", "s", "Time from the request's arrival to its first token sent",
            explicit_bucket_boundaries_advisory=TTFT_BUCKETS)
        self.request_duration = meter.create_histogram(
            "gen_ai.server.request.duration", "s", "Time from the request's arrival to the end of its answer",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Tracer:
        """Providers with the exporters the environment names (OTLP/HTTP by default)."""
        attributes = {} if environ.get("OTEL_SERVICE_NAME") else {"service.name": "streamgate"}
        resource = Resource.create(attributes)
        tracer_provider = TracerProvider(resource=resource)
        exporter = _exporter(environ)
        if exporter is not None:
            tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
        reader = _metric_reader(environ)
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader] if reader is not None else [])
        return cls(tracer_provider, meter_provider)

    def request(self, call: Call, scope: Scope, started_at: float) -> RequestTrace:
        """The span of one chat request, dated from its arrival (`started_at`, monotonic)."""
        carrier = {name.decode(): value.decode("latin-1") for name, value in scope["headers"]
                   if name in _TRACE_HEADERS}
        parent = _propagator.extract(carrier) if carrier else None
        provider = PROVIDER_NAMES.get(call.provider, call.provider)
        attributes = {"gen_ai.operation.name": OPERATION, "gen_ai.provider.name": provider,
                      "gen_ai.request.model": call.model}
        start_time = time.time_ns() - int((time.monotonic() - started_at) * 1e9)
        span = self.tracer.start_span(f"{OPERATION} {call.model}", context=parent, kind=SpanKind.SERVER,
                                      attributes=attributes, start_time=start_time)
        return RequestTrace(self, span, provider)

    def flush(self) -> None:
        """Export what is pending (at an app's end; the providers stop at the process's exit)."""
        self.tracer_provider.force_flush(5_000)
        self.meter_provider.force_flush(5_000)


class RequestTrace:
    """One chat request's span, its attempts' parent."""

    __slots__ = ("context", "provider", "server_address", "span", "tracer")

    def __init__(self, tracer: Tracer, span: trace.Span, provider: str) -> None:
        self.tracer = tracer
        self.span = span
        self.provider = provider
        self.server_address: str | None = None
        self.context: Context | None = None

    def attempt(self, method: str, url: yarl.URL, headers: list[tuple[str, str]]) -> Attempt:
        """A child span for one upstream HTTP request; its `traceparent` is appended to `headers`."""
        if self.context is None:
            self.context = trace.set_span_in_context(self.span)
        host = url.host or ""
        self.server_address = host
        attributes: dict[str, Any] = {"http.request.method": method, "server.address": host,
                                      "url.full": str(url.with_query(None)), "gen_ai.provider.name": self.provider}
        if url.port is not None:
            attributes["server.port"] = url.port
        span = self.tracer.tracer.start_span(method, context=self.context, kind=SpanKind.CLIENT,
                                             attributes=attributes)
        carrier: dict[str, str] = {}
        _propagator.inject(carrier, context=trace.set_span_in_context(span))
        headers.extend(carrier.items())
        return Attempt(span)

    def end(self, call: Call, progress: StreamProgress) -> None:
        """Set what the request came to, end its span, record the metrics."""
        span = self.span
        now = time.monotonic()
        attributes: dict[str, Any] = {"gen_ai.operation.name": OPERATION, "gen_ai.provider.name": self.provider,
                                      "gen_ai.request.model": call.model, "gen_ai.response.model": call.model}
        if self.server_address:
            attributes["server.address"] = self.server_address
        if progress.error_type is not None:
            attributes["error.type"] = progress.error_type
        span.set_attributes(attributes)
        response_id = getattr(call.frames, "completion_id", None) or progress.stream_id
        if response_id:
            span.set_attribute("gen_ai.response.id", response_id)
        if progress.finish_reason is not None:
            span.set_attribute("gen_ai.response.finish_reasons", (progress.finish_reason.value,))
        usage = progress.usage
        if usage is not None:
            span.set_attributes({"gen_ai.usage.input_tokens": usage.prompt_tokens,
                                 "gen_ai.usage.output_tokens": usage.completion_tokens})
            if usage.cached_tokens:
                span.set_attribute("gen_ai.usage.cache_read.input_tokens", usage.cached_tokens)
            if usage.cache_creation_tokens:
                span.set_attribute("gen_ai.usage.cache_creation.input_tokens", usage.cache_creation_tokens)
        if progress.error_type is not None:
            span.set_status(Status(StatusCode.ERROR, progress.error_type))
        span.end()
        tracer = self.tracer
        tracer.request_duration.record(now - progress.started_at, attributes)
        tracer.operation_duration.record(now - (progress.upstream_written_at or progress.started_at), attributes)
        if progress.first_token_at is not None:
            tracer.time_to_first_token.record(progress.first_token_at - progress.started_at, attributes)
        if usage is not None:
            tracer.token_usage.record(usage.prompt_tokens, {**attributes, "gen_ai.token.type": "input"})
            tracer.token_usage.record(usage.completion_tokens, {**attributes, "gen_ai.token.type": "output"})


class Attempt:
    """One upstream HTTP request's span, ended at its response head or its failure."""

    __slots__ = ("span",)

    def __init__(self, span: trace.Span) -> None:
        self.span = span

    def end(self, status: int | None, error: BaseException | None) -> None:
        span = self.span
        if status is not None:
            span.set_attribute("http.response.status_code", status)
            if status >= 400:
                span.set_attribute("error.type", str(status))
                span.set_status(Status(StatusCode.ERROR))
        elif error is not None:
            span.set_attribute("error.type", type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR, str(error)[:200] or None))
        span.end()
