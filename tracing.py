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

The tracer provider is our own, not OpenTelemetry's global one (an SDK with its own
instrumentation, like anthropic's, is not switched on by it); the histograms are kept here
(`GenAIHistogram`) and sent by the SDK's metric exporter. The exporters are OTLP over
HTTP/protobuf (or the console's, `OTEL_TRACES_EXPORTER=console`); the SDK reads the rest of
its variables itself: `OTEL_EXPORTER_OTLP_*`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_BSP_*`, `OTEL_TRACES_SAMPLER`. No prompt or answer text is ever recorded.
"""

from __future__ import annotations

import bisect
import logging
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import yarl
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ConsoleMetricExporter,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, DEFAULT_ON, Decision
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .genai_content import CAPTURE_VARIABLE, Content

if TYPE_CHECKING:
    from starlette.types import Scope

    from .adapter import ChunkStream
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
        return _ConsoleExporter()
    if kind != "otlp":
        log.warning("OTEL_TRACES_EXPORTER=%s is not supported here (otlp, console): traces are off", kind)
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    class Exporter(OTLPSpanExporter):
        """The SDK's OTLP/HTTP span exporter (endpoint, headers, TLS, compression, retries:
        its `OTEL_EXPORTER_OTLP_*` handling), our spans encoded by `encode_spans`; any span
        it cannot write, or an exporter without the internal `_client` it sends with, goes
        the SDK's own way."""

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            client = getattr(self, "_client", None)
            if getattr(self, "_shutdown", True) or client is None or not encodable(spans):
                return super().export(readable(spans))
            return SpanExportResult.SUCCESS if client.export(encode_spans(spans)).success else SpanExportResult.FAILURE

    return Exporter()


class _ConsoleExporter(ConsoleSpanExporter):
    """The SDK's console exporter, given our spans as the SDK's."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return super().export(readable(spans))


def _metric_exporter(environ: Mapping[str, str]) -> MetricExporter | None:
    kind = environ.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower()
    if kind == "console":
        return ConsoleMetricExporter()
    if kind != "otlp":
        return None
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter()


class HistogramSeries:
    """One attribute set's cumulative histogram."""

    __slots__ = ("attributes", "bucket_counts", "count", "max", "min", "sum")

    def __init__(self, attributes: Mapping[str, Any], buckets: int) -> None:
        self.attributes = attributes
        self.bucket_counts = [0] * buckets
        self.count = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")


class GenAIHistogram:
    """A histogram kept here and exported as OTLP's cumulative explicit-bucket histogram.

    Not the SDK's `MeterProvider`: its `record` cleans and hashes the attributes and takes
    locks each time, five records per request (the README's Observability section has what that costs); here
    a record is a dict lookup by the attribute set's identity (each set is made once and
    kept: `Tracer.metric_attributes`), a bisect and four additions.
    """

    def __init__(
        self,
        name: str,
        unit: str,
        description: str,
        boundaries: tuple[float, ...],
        lock: threading.Lock | None = None,
    ) -> None:
        self.name, self.unit, self.description, self.boundaries = name, unit, description, boundaries
        self.series: dict[int, HistogramSeries] = {}
        self.lock = lock or threading.Lock()  # shared by a tracer's histograms: one take per request

    def record(self, value: float, attributes: Mapping[str, Any]) -> None:
        """Record `value` under `attributes` (one long-lived mapping per attribute set)."""
        with self.lock:
            self.add(value, attributes)

    def add(self, value: float, attributes: Mapping[str, Any]) -> None:
        """`record`, the caller holding `lock`."""
        series = self.series.get(id(attributes))
        if series is None:
            series = self.series[id(attributes)] = HistogramSeries(attributes, len(self.boundaries) + 1)
        series.bucket_counts[bisect.bisect_left(self.boundaries, value)] += 1
        series.count += 1
        series.sum += value
        if value < series.min:
            series.min = value
        if value > series.max:
            series.max = value

    def metric(self, start_ns: int, now_ns: int) -> Metric | None:
        """What was recorded so far, as the SDK's metric data (`None`: nothing yet)."""
        with self.lock:
            points = [
                HistogramDataPoint(
                    attributes=series.attributes,
                    start_time_unix_nano=start_ns,
                    time_unix_nano=now_ns,
                    count=series.count,
                    sum=series.sum,
                    bucket_counts=list(series.bucket_counts),
                    explicit_bounds=self.boundaries,
                    min=series.min,
                    max=series.max,
                )
                for series in self.series.values()
            ]
        if not points:
            return None
        return Metric(
            name=self.name,
            description=self.description,
            unit=self.unit,
            data=Histogram(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE),
        )


class MetricsExport:
    """Exports the histograms every `OTEL_METRIC_EXPORT_INTERVAL` ms (default 60 s) from a
    daemon thread, and once more at `flush`."""

    def __init__(
        self, exporter: MetricExporter, resource: Resource, histograms: list[GenAIHistogram], interval_s: float
    ) -> None:
        self.exporter = exporter
        self.resource = resource
        self.histograms = histograms
        self.interval_s = interval_s
        self.started_ns = time.time_ns()
        self.scope = InstrumentationScope("streamgate")
        self.lock = threading.Lock()  # one export at a time
        threading.Thread(target=self._run, name="streamgate-metrics", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            self.export()

    def export(self) -> None:
        now_ns = time.time_ns()
        metrics = [
            metric for histogram in self.histograms if (metric := histogram.metric(self.started_ns, now_ns)) is not None
        ]
        if not metrics:
            return
        data = MetricsData(
            resource_metrics=[
                ResourceMetrics(
                    resource=self.resource,
                    scope_metrics=[ScopeMetrics(scope=self.scope, metrics=metrics, schema_url="")],
                    schema_url="",
                )
            ]
        )
        with self.lock:
            try:
                self.exporter.export(data)
            except Exception:
                log.warning("exporting the gen_ai metrics failed", exc_info=True)


class _Resource(Resource):
    """A `Resource` hashed once: the OTLP encoder groups every span by its resource, and
    `Resource.__hash__` dumps the attributes to JSON each time (a tenth of the export's CPU)."""

    _hash: int | None = None

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = super().__hash__()
        return self._hash


class SpanRecord:
    """One of our spans as the SDK's span processor and exporters read a `ReadableSpan`:
    the same names, plain slots. Not the SDK's `Span`: starting and ending one of those
    (attribute cleaning, a lock per attribute set, context objects, the processors' fan-out)
    was most of tracing's cost per request. Handed to the SDK's `BatchSpanProcessor` as
    ended spans are; encoded by `encode_spans`, or turned into a `ReadableSpan`
    (`readable`) for any other exporter."""

    __slots__ = (
        "attributes",
        "context",
        "dropped_attributes",
        "end_time",
        "instrumentation_scope",
        "kind",
        "name",
        "parent",
        "resource",
        "start_time",
        "status",
    )

    events: tuple[()] = ()
    links: tuple[()] = ()
    dropped_events = 0
    dropped_links = 0

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        start_time: int,
        attributes: dict[str, Any],
        tracer: Tracer,
    ) -> None:
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.start_time = start_time
        self.end_time: int | None = None
        self.attributes: Mapping[str, Any] = attributes
        self.dropped_attributes = 0
        self.status = _UNSET
        self.resource = tracer.resource
        self.instrumentation_scope = tracer.scope

    def readable(self) -> ReadableSpan:
        """The SDK's own `ReadableSpan` of this record (for exporters other than ours)."""
        return ReadableSpan(
            name=self.name,
            context=self.context,
            parent=self.parent,
            resource=self.resource,
            attributes=self.attributes,
            kind=self.kind,
            status=self.status,
            start_time=self.start_time,
            end_time=self.end_time,
            instrumentation_scope=self.instrumentation_scope,
        )


def readable(spans: Sequence[ReadableSpan | SpanRecord]) -> list[ReadableSpan]:
    """`spans` as the SDK's `ReadableSpan`s."""
    return [span.readable() if isinstance(span, SpanRecord) else span for span in spans]


_UNSET = Status(StatusCode.UNSET)
#: Trace flags by (sampled, random trace id), made once.
_FLAGS = {
    (sampled, random): TraceFlags(
        (TraceFlags.SAMPLED if sampled else 0) | (TraceFlags.RANDOM_TRACE_ID if random else 0)
    )
    for sampled in (False, True)
    for random in (False, True)
}


class Tracer:
    """The process's span factory and GenAI histograms: makes one `RequestTrace` per chat
    request. The SDK's `TracerProvider` is kept for what it reads from the environment (the
    sampler, the id generator, the resource) and to flush and shut down the span processor."""

    def __init__(
        self,
        tracer_provider: TracerProvider,
        metric_exporter: MetricExporter | None,
        resource: Resource,
        export_interval_s: float = 60.0,
        processor: SpanProcessor | None = None,
        capture_content: bool = False,
    ) -> None:
        #: Metric attributes by (provider, model, upstream host, error type), made once each.
        self.metric_attributes: dict[tuple[str, str, str | None, str | None], dict[str, Any]] = {}
        self._token_attributes: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        self.tracer_provider = tracer_provider
        self.processor = processor
        self.resource = resource
        self.scope = InstrumentationScope("streamgate")
        self.sampler = tracer_provider.sampler
        self.id_generator = tracer_provider.id_generator
        self.random_trace_ids = self.id_generator.is_trace_id_random()
        limits = SpanLimits()
        self.max_attributes: int | None = limits.max_span_attributes
        self.max_attribute_length: int | None = limits.max_span_attribute_length
        #: `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`: the prompt and the answer go on the span.
        self.capture_content = capture_content
        self.metrics_lock = threading.Lock()  # the histograms' (a request's five records take it once)
        self.operation_duration = GenAIHistogram(
            "gen_ai.client.operation.duration",
            "s",
            "GenAI operation duration: the upstream's, from its request to the end of its answer",
            DURATION_BUCKETS,
            self.metrics_lock,
        )
        self.token_usage = GenAIHistogram(
            "gen_ai.client.token.usage",
            "{token}",
            "Number of input and output tokens used",
            TOKEN_BUCKETS,
            self.metrics_lock,
        )
        self.time_to_first_token = GenAIHistogram(
            "gen_ai.server.time_to_first_token",
            "s",
            "Time from the request's arrival to its first token sent",
            TTFT_BUCKETS,
            self.metrics_lock,
        )
        self.request_duration = GenAIHistogram(
            "gen_ai.server.request.duration",
            "s",
            "Time from the request's arrival to the end of its answer",
            DURATION_BUCKETS,
            self.metrics_lock,
        )
        histograms = [self.operation_duration, self.token_usage, self.time_to_first_token, self.request_duration]
        self.metrics_export = (
            None if metric_exporter is None else MetricsExport(metric_exporter, resource, histograms, export_interval_s)
        )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Tracer:
        """A tracer with the exporters the environment names (OTLP/HTTP by default)."""
        attributes = {} if environ.get("OTEL_SERVICE_NAME") else {"service.name": "streamgate"}
        created = Resource.create(attributes)
        resource = _Resource(created.attributes, created.schema_url)
        tracer_provider = TracerProvider(resource=resource)
        exporter = _exporter(environ)
        processor = None
        if exporter is not None:
            # Batches of 2048 spans unless the environment says otherwise (the SDK's default is
            # 512): each export costs its thread ~5 ms of HTTP client work, and while it runs it
            # takes the GIL from the event loop.
            processor = BatchSpanProcessor(
                exporter,
                max_queue_size=int(environ.get("OTEL_BSP_MAX_QUEUE_SIZE") or 8192),
                max_export_batch_size=int(environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") or 2048),
            )
            tracer_provider.add_span_processor(processor)  # flushed and shut down with the provider
        try:
            interval_s = float(environ.get("OTEL_METRIC_EXPORT_INTERVAL", "60000")) / 1000
        except ValueError:
            interval_s = 60.0
        capture = environ.get(CAPTURE_VARIABLE, "").strip().lower() == "true"
        return cls(
            tracer_provider,
            _metric_exporter(environ),
            resource,
            interval_s if interval_s > 0 else 60.0,
            processor,
            capture,
        )

    def start(
        self, name: str, kind: SpanKind, parent: SpanContext | None, attributes: dict[str, Any], start_time: int
    ) -> tuple[SpanContext, SpanRecord | None]:
        """A new span's context, and its record when it is sampled (by the SDK's sampler:
        parent-based always-on unless `OTEL_TRACES_SAMPLER` says otherwise)."""
        sampler = self.sampler
        if parent is None:
            trace_id = self.id_generator.generate_trace_id()
            random = self.random_trace_ids
        else:
            trace_id = parent.trace_id
            random = parent.trace_flags.random_trace_id
        if sampler is DEFAULT_ON or sampler is ALWAYS_ON:  # the sampler's decision, without its call
            sampled = parent is None or sampler is ALWAYS_ON or parent.trace_flags.sampled
            trace_state = parent.trace_state if parent is not None else None
        else:
            parent_context = None if parent is None else trace.set_span_in_context(trace.NonRecordingSpan(parent))
            result = sampler.should_sample(parent_context, trace_id, name, kind, attributes)
            sampled = result.decision is Decision.RECORD_AND_SAMPLE
            attributes = dict(result.attributes or {})
            trace_state = result.trace_state
        context = SpanContext(
            trace_id,
            self.id_generator.generate_span_id(),
            is_remote=False,
            trace_flags=_FLAGS[sampled, random],
            trace_state=trace_state,
        )
        if not sampled or self.processor is None:
            return context, None
        return context, SpanRecord(name, context, parent, kind, start_time, attributes, self)

    def emit(self, record: SpanRecord) -> None:
        """Hand an ended span to the batch processor (within the span limits, when set)."""
        record.end_time = time.time_ns()
        if self.max_attribute_length is not None or (
            self.max_attributes is not None and len(record.attributes) > self.max_attributes
        ):
            bounded = BoundedAttributes(self.max_attributes, record.attributes, max_value_len=self.max_attribute_length)
            record.attributes, record.dropped_attributes = bounded, bounded.dropped
        self.processor.on_end(record)  # type: ignore[union-attr, arg-type]  # a record only with a processor

    def request(self, call: Call, scope: Scope, started_at: float, body: bytes = b"") -> RequestTrace:
        """The span of one chat request, dated from its arrival (`started_at`, monotonic);
        `body` is the request as the client sent it (read only to capture content)."""
        parent = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                carrier = {
                    name.decode(): value.decode("latin-1") for name, value in scope["headers"] if name in _TRACE_HEADERS
                }
                parent = trace.get_current_span(_propagator.extract(carrier)).get_span_context()
                if not parent.is_valid:
                    parent = None
                break
        provider = PROVIDER_NAMES.get(call.provider, call.provider)
        attributes = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": call.model,
        }
        start_time = time.time_ns() - int((time.monotonic() - started_at) * 1e9)
        context, record = self.start(f"{OPERATION} {call.model}", SpanKind.SERVER, parent, attributes, start_time)
        request_trace = RequestTrace(self, context, record, provider)
        if self.capture_content and record is not None:
            request_trace.content = Content(body)
        return request_trace

    def token_attributes(self, attributes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """`attributes` with `gen_ai.token.type` `input`, and with `output` (made once each)."""
        pair = self._token_attributes.get(id(attributes))
        if pair is None:
            pair = self._token_attributes[id(attributes)] = (
                {**attributes, "gen_ai.token.type": "input"},
                {**attributes, "gen_ai.token.type": "output"},
            )
        return pair

    def flush(self) -> None:
        """Export what is pending (at an app's end; the providers stop at the process's exit)."""
        self.tracer_provider.force_flush(5_000)
        if self.metrics_export is not None:
            self.metrics_export.export()


class RequestTrace:
    """One chat request's span (`record`: `None` when it is not sampled), its attempts' parent."""

    __slots__ = ("content", "context", "provider", "record", "server_address", "tracer")

    def __init__(self, tracer: Tracer, context: SpanContext, record: SpanRecord | None, provider: str) -> None:
        self.tracer = tracer
        self.context = context
        self.record = record
        self.provider = provider
        self.server_address: str | None = None
        self.content: Content | None = None  # the prompt and the answer, when captured

    def attempt(self, method: str, url: yarl.URL, headers: list[tuple[str, str]]) -> Attempt:
        """A child span for one upstream HTTP request; its `traceparent` is appended to `headers`."""
        host = self.server_address = url.host or ""
        key = (url.scheme, url.raw_authority, url.raw_path)
        full = _full_urls.get(key)
        if full is None:  # without its query (a key may ride there) and user info: made once per path
            full = str(url.with_user(None).with_query(None).with_fragment(None))
            if len(_full_urls) < _MAX_FULL_URLS:
                _full_urls[key] = full
        attributes: dict[str, Any] = {"http.request.method": method, "server.address": host, "url.full": full}
        if url.port is not None:
            attributes["server.port"] = url.port
        tracer = self.tracer
        context, record = tracer.start(method, SpanKind.CLIENT, self.context, attributes, time.time_ns())
        # W3C Trace Context, as its propagator writes it
        headers.append(("traceparent", f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"))
        if context.trace_state:
            headers.append(("tracestate", context.trace_state.to_header()))
        return Attempt(tracer, record)

    def opened(self, stream: ChunkStream) -> ChunkStream:
        """The upstream's stream, read through the content capture when it is on."""
        return stream if self.content is None else self.content.reading(stream)

    def end(self, call: Call, progress: StreamProgress) -> None:
        """Set what the request came to, end its span, record the metrics (one attribute set
        per provider, model, upstream host and error type, made once)."""
        now = time.monotonic()
        tracer = self.tracer
        key = (self.provider, call.model, self.server_address, progress.error_type)
        metric_attributes = tracer.metric_attributes.get(key)
        if metric_attributes is None:
            metric_attributes = tracer.metric_attributes[key] = _metric_attributes(*key)
        usage = progress.usage
        record = self.record
        if record is not None:
            attributes = cast(dict[str, Any], record.attributes)
            attributes.update(metric_attributes)
            response_id = getattr(call.frames, "completion_id", None) or progress.stream_id
            if response_id:
                attributes["gen_ai.response.id"] = response_id
            if progress.finish_reason is not None:
                attributes["gen_ai.response.finish_reasons"] = (progress.finish_reason.value,)
            if usage is not None:
                attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
                attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
                if usage.cached_tokens:
                    attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cached_tokens
                if usage.cache_creation_tokens:
                    attributes["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_creation_tokens
            if self.content is not None:
                self.content.record(attributes, progress.finish_reason)
            if progress.error_type is not None:
                record.status = Status(StatusCode.ERROR, progress.error_type)
            tracer.emit(record)
        token_attributes = tracer.token_attributes(metric_attributes) if usage is not None else None
        with tracer.metrics_lock:
            tracer.request_duration.add(now - progress.started_at, metric_attributes)
            tracer.operation_duration.add(
                now - (progress.upstream_written_at or progress.started_at), metric_attributes
            )
            if progress.first_token_at is not None:
                tracer.time_to_first_token.add(progress.first_token_at - progress.started_at, metric_attributes)
            if usage is not None and token_attributes is not None:
                tracer.token_usage.add(usage.prompt_tokens, token_attributes[0])
                tracer.token_usage.add(usage.completion_tokens, token_attributes[1])


_full_urls: dict[tuple[str, str, str], str] = {}  # an upstream URL's `url.full`, by scheme, authority, path
_MAX_FULL_URLS = 1024


def _metric_attributes(provider: str, model: str, server_address: str | None, error_type: str | None) -> dict[str, Any]:
    """The attributes of a request's metrics (and the start of its span's)."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": OPERATION,
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.response.model": model,
    }
    if server_address:
        attributes["server.address"] = server_address
    if error_type is not None:
        attributes["error.type"] = error_type
    return attributes


class Attempt:
    """One upstream HTTP request's span, ended at its response head or its failure."""

    __slots__ = ("record", "tracer")

    def __init__(self, tracer: Tracer, record: SpanRecord | None) -> None:
        self.tracer = tracer
        self.record = record

    def end(self, status: int | None, error: BaseException | None) -> None:
        record = self.record
        if record is None:
            return
        attributes = cast(dict[str, Any], record.attributes)
        if status is not None:
            attributes["http.response.status_code"] = status
            if status >= 400:
                attributes["error.type"] = str(status)
                record.status = _ERROR
        elif error is not None:
            attributes["error.type"] = type(error).__qualname__
            record.status = Status(StatusCode.ERROR, str(error)[:200] or None)
        self.tracer.emit(record)


_ERROR = Status(StatusCode.ERROR)


# --- the OTLP span encoding -------------------------------------------------------------


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [bytes((n,)) for n in range(0x80)]


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (`tag` = field number << 3 | 2)."""
    return _varint(tag) + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    """An `AnyValue` message's bytes."""
    if isinstance(value, str):
        return _field(0x0A, value.encode())
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    if isinstance(value, bytes):
        return _field(0x3A, value)
    if isinstance(value, (tuple, list)):
        return _field(0x2A, b"".join(_field(0x0A, _any_value(item)) for item in value))
    if isinstance(value, Mapping):  # a `KeyValueList` (structured content: `genai_content.py`)
        return _field(0x32, _key_values(0x0A, value))
    if value is None:
        return b""  # an empty `AnyValue`
    return _field(0x0A, str(value).encode())


def _key_values(tag: int, attributes: Mapping[str, Any]) -> bytes:
    """Repeated `KeyValue` fields numbered by `tag`; the same key and value recur from span
    to span (operation, provider, model, host), so each pair's bytes are kept (a bounded
    number of them)."""
    parts = []
    for key, value in attributes.items():
        pair: tuple[int, str, type[Any], Any] | None = (tag, key, type(value), value)  # True, 1 and 1.0 differ
        try:
            encoded = _encoded_pairs.get(pair)  # type: ignore[arg-type]  # not None here
        except TypeError:  # an unhashable value
            encoded = pair = None
        if encoded is None:
            encoded = _field(tag, _field(0x0A, key.encode()) + _field(0x12, _any_value(value)))
            if pair is not None and len(encoded) <= _MAX_ENCODED_PAIR_BYTES:  # not a captured text
                if len(_encoded_pairs) >= _MAX_ENCODED_PAIRS:
                    _encoded_pairs.clear()
                _encoded_pairs[pair] = encoded
        parts.append(encoded)
    return b"".join(parts)


_encoded_pairs: dict[tuple[Any, ...], bytes] = {}
_MAX_ENCODED_PAIRS = 4096
_MAX_ENCODED_PAIR_BYTES = 256


def _span(span: ReadableSpan | SpanRecord) -> bytes:
    """One `Span` message's bytes (events and links: see `encodable`)."""
    context = span.context
    parent = span.parent
    trace_id = context.trace_id
    parts = [_IDS.pack(0x0A, 0x10, trace_id >> 64, trace_id & _LOW_64, 0x12, 0x08, context.span_id)]
    if context.trace_state:
        parts.append(_field(0x1A, context.trace_state.to_header().encode()))
    if parent is not None:
        parts.append(_PARENT.pack(0x22, 0x08, parent.span_id))
    name = _names.get(span.name)
    if name is None:
        name = _field(0x2A, span.name.encode())
        if len(_names) < _MAX_NAMES:
            _names[span.name] = name
    parts += (
        name,
        _KINDS[span.kind],
        _TIMES.pack(0x39, span.start_time or 0, 0x41, span.end_time or 0),
        _key_values(0x4A, span.attributes or {}),
    )
    if span.dropped_attributes:
        parts += (b"\x50", _varint(span.dropped_attributes))
    status = span.status
    if status is _UNSET:
        parts.append(b"\x7a\x00")  # always, as the SDK
    else:
        code = status.status_code.value
        message = _field(0x12, status.description.encode()) if status.description else b""
        parts.append(_field(0x7A, message + (b"\x18" + _varint(code) if code else b"")))
    parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
    return b"".join(parts)


_IDS = struct.Struct(">BBQQBBQ")  # trace_id (16 bytes, big-endian), span_id (8)
_PARENT = struct.Struct(">BBQ")
_TIMES = struct.Struct("<BQBQ")  # start and end, fixed64
_LOW_64 = (1 << 64) - 1
_KINDS = {kind: b"\x30" + _varint(kind.value + 1) for kind in SpanKind}
_FLAGS_LOCAL = b"\x85\x01" + struct.pack("<I", 0x100)  # HAS_IS_REMOTE
_FLAGS_REMOTE = b"\x85\x01" + struct.pack("<I", 0x300)  # HAS_IS_REMOTE, IS_REMOTE
_names: dict[str, bytes] = {}  # a span name's field (`chat {model}`, `POST`): a bounded number
_MAX_NAMES = 1024


def encodable(spans: Sequence[ReadableSpan | SpanRecord]) -> bool:
    """Whether `encode_spans` can write these spans: none has events or links (ours have
    neither; anything else goes through the SDK's encoder)."""
    return not any(span.events or span.links for span in spans)


def encode_spans(spans: Sequence[ReadableSpan | SpanRecord]) -> bytes:
    """An OTLP `ExportTraceServiceRequest` holding `spans`, grouped by resource and scope,
    as the SDK's encoder writes it, at a fraction of its CPU (it builds a protobuf object per
    attribute; this joins bytes)."""
    groups: dict[int, tuple[Resource, dict[int, tuple[InstrumentationScope | None, list[bytes]]]]] = {}
    for span in spans:
        resource = span.resource
        group = groups.get(id(resource))
        if group is None:
            group = groups[id(resource)] = (resource, {})
        scope = span.instrumentation_scope
        entry = group[1].get(id(scope))
        if entry is None:
            entry = group[1][id(scope)] = (scope, [])
        entry[1].append(_field(0x12, _span(span)))
    resource_spans = []
    for resource, scopes in groups.values():
        body = [_field(0x0A, _key_values(0x0A, resource.attributes))]
        for scope, encoded in scopes.values():
            scope_body = b""
            if scope is not None:
                scope_body = _field(0x0A, scope.name.encode()) + (
                    _field(0x12, scope.version.encode()) if scope.version else b""
                )
                scope_body = _field(0x0A, scope_body)
            schema = _field(0x1A, scope.schema_url.encode()) if scope is not None and scope.schema_url else b""
            body.append(_field(0x12, scope_body + b"".join(encoded) + schema))
        if resource.schema_url:
            body.append(_field(0x1A, resource.schema_url.encode()))
        resource_spans.append(_field(0x0A, b"".join(body)))
    return b"".join(resource_spans)
