"""OpenTelemetry: a real gateway process, configured only by the SDK's own `OTEL_*`
variables, exports GenAI spans and metrics over OTLP/HTTP to a real receiver here (the
protobuf decoded with `opentelemetry-proto`); off, nothing of OpenTelemetry is imported.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from processes import ROOT, gateways
from wire_anthropic import sdk_message, text_block, thinking_block, tool_block, whole_message, whole_stream
from wire_openai import SSE_HEAD, LoopbackUpstream, completion, http_chunk, openai_like

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN_ID}-01"
HELLO = [{"role": "user", "content": "Hello"}]


class OTLPReceiver:
    """An OTLP/HTTP receiver on 127.0.0.1 (`/v1/traces`, `/v1/metrics`, protobuf), in its own thread."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Span]] = []  # (resource attributes, span)
        self.metrics: dict[str, list[dict[str, Any]]] = {}  # name → attributes of each data point
        self.url = ""

    async def _traces(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await self._body(request))
        for resource_spans in export.resource_spans:
            resource = attributes_of(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend((resource, span) for span in scope_spans.spans)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        export = ExportMetricsServiceRequest.FromString(await self._body(request))
        for resource_metrics in export.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    points = metric.histogram.data_points
                    self.metrics.setdefault(metric.name, []).extend(
                        {**attributes_of(point.attributes), "count": point.count} for point in points
                    )
        return web.Response(
            body=ExportMetricsServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    @staticmethod
    async def _body(request: web.Request) -> bytes:
        body = await request.read()
        return gzip.decompress(body) if request.headers.get("content-encoding") == "gzip" else body

    @contextmanager
    def running(self) -> Iterator[OTLPReceiver]:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        app.router.add_post("/v1/metrics", self._metrics)
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()


def value_of(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    return getattr(value, kind) if kind else None


def attributes_of(attributes: Any) -> dict[str, Any]:
    return {attribute.key: value_of(attribute.value) for attribute in attributes}


def wait_for(condition: Any, what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s"
        time.sleep(0.02)


class FlakyUpstream:
    """OpenAI's wire: a 503 (`retry-after: 0`) for the first request, then a stream."""

    def __init__(self) -> None:
        self.answered = 0
        self.loopback = LoopbackUpstream(self._answer)

    async def _answer(self, writer: asyncio.StreamWriter) -> None:
        self.answered += 1
        if self.answered == 1:
            body = b'{"error": {"message": "overloaded", "type": "server_error"}}'
            writer.write(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 0\r\n"
                b"content-length: %d\r\n\r\n%b" % (len(body), body)
            )
        else:
            writer.write(SSE_HEAD + http_chunk(completion(["Hi", " there"], usage=(9, 2))) + b"0\r\n\r\n")
        await writer.drain()

    def traceparents(self) -> list[str]:
        return [
            line.split(b":", 1)[1].strip().decode()
            for raw in self.loopback.requests
            for line in raw.split(b"\r\n\r\n")[0].split(b"\r\n")
            if line.lower().startswith(b"traceparent:")
        ]


def test_a_chat_request_is_a_genai_span_with_one_child_per_attempt(tmp_path: Path) -> None:
    receiver, upstream = OTLPReceiver(), FlakyUpstream()
    with receiver.running(), upstream.loopback.running():
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "MODEL_CATALOG_REFRESH_S": "0",
            "OTEL_SERVICE_NAME": "streamgate-test",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_METRIC_EXPORT_INTERVAL": "200",
            "OPENAI_API_KEY": "sk-otel",
            "OPENAI_BASE_URL": upstream.loopback.url,
            "UPSTREAM_MAX_RETRIES": "1",
        }
        with gateways(tmp_path, 1, **env) as [(_, url)]:
            response = httpx.post(
                url + "/api/v1/chat/stream",
                timeout=10,
                headers={"traceparent": TRACEPARENT},
                json={"provider": "openai", "model": "gpt-4o", "messages": HELLO},
            )
            assert response.status_code == 200 and "Hi" in response.text
            wait_for(lambda: len(receiver.spans) >= 3, "spans")
            wait_for(
                lambda: {"gen_ai.client.token.usage", "gen_ai.server.time_to_first_token"} <= set(receiver.metrics),
                "metrics",
            )

    spans = {span.name: (resource, span) for resource, span in receiver.spans}
    resource, request = spans["chat gpt-4o"]
    assert resource["service.name"] == "streamgate-test"
    assert request.trace_id.hex() == TRACE_ID and request.parent_span_id.hex() == CLIENT_SPAN_ID
    assert request.kind == Span.SPAN_KIND_SERVER
    attributes = attributes_of(request.attributes)
    assert attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": 9,
        "gen_ai.usage.output_tokens": 2,
        "server.address": "127.0.0.1",
    }
    # The capture variable is unset: no text, ever.
    assert not any("Hello" in json.dumps(attributes_of(span.attributes)) for _, span in receiver.spans)
    assert not any(name.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.system")) for name in attributes)

    attempts = [span for _, span in receiver.spans if span.name == "POST"]
    assert len(attempts) == 2  # the 503, then the stream
    for attempt in attempts:
        assert attempt.trace_id.hex() == TRACE_ID and attempt.parent_span_id == request.span_id
        assert attempt.kind == Span.SPAN_KIND_CLIENT
        assert request.start_time_unix_nano <= attempt.start_time_unix_nano <= attempt.end_time_unix_nano
    statuses = sorted(attributes_of(attempt.attributes)["http.response.status_code"] for attempt in attempts)
    assert statuses == [200, 503]
    assert {attributes_of(attempt.attributes)["url.full"] for attempt in attempts} == {
        upstream.loopback.url + "/chat/completions"
    }
    # Each attempt's own context went upstream as its `traceparent`.
    assert upstream.traceparents() == [
        f"00-{TRACE_ID}-{attempt.span_id.hex()}-01"
        for attempt in sorted(attempts, key=lambda span: span.start_time_unix_nano)
    ]

    for name in (
        "gen_ai.client.operation.duration",
        "gen_ai.server.request.duration",
        "gen_ai.server.time_to_first_token",
    ):
        assert any(
            point["gen_ai.provider.name"] == "openai"
            and point["gen_ai.request.model"] == "gpt-4o"
            and point["count"] == 1
            for point in receiver.metrics[name]
        ), name
    tokens = {point["gen_ai.token.type"]: point["count"] for point in receiver.metrics["gen_ai.client.token.usage"]}
    assert tokens == {"input": 1, "output": 1}


def test_an_error_is_recorded_as_error_type(tmp_path: Path) -> None:
    """A refusal from the upstream: `error.type` on the request span, no trace parent needed."""
    receiver, upstream = OTLPReceiver(), FlakyUpstream()
    with receiver.running(), upstream.loopback.running():
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "MODEL_CATALOG_REFRESH_S": "0",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_METRICS_EXPORTER": "none",
            "OPENAI_API_KEY": "sk-otel",
            "OPENAI_BASE_URL": upstream.loopback.url,
            "UPSTREAM_MAX_RETRIES": "0",
        }
        with gateways(tmp_path, 1, **env) as [(_, url)]:
            response = httpx.post(url + "/v1/chat/completions", timeout=10, json={"model": "gpt-4o", "messages": HELLO})
            assert response.status_code == 502
            wait_for(lambda: len(receiver.spans) >= 2, "spans")
    request = next(span for _, span in receiver.spans if span.name == "chat gpt-4o")
    assert len(request.parent_span_id) == 0  # a root: the client sent no traceparent
    attributes = attributes_of(request.attributes)
    assert attributes["error.type"] == "upstream_error" and attributes["gen_ai.response.id"].startswith("chatcmpl-")
    assert request.status.code == request.status.STATUS_CODE_ERROR


OFF_CHECK = """
import sys
import anthropic, openai, google.genai  # the SDKs may import OpenTelemetry's API themselves
baseline = {name for name in sys.modules if name.startswith("opentelemetry")}
import httpx, asyncio
from streamgate.app import create_app
app = create_app()
async def chat():
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.post("/api/v1/chat", json={"provider": "echo", "messages": [
            {"role": "user", "content": "hi"}]})
        assert response.status_code == 200, response.text
asyncio.run(chat())
loaded = {name for name in sys.modules if name.startswith("opentelemetry")}
sdk = {name for name in loaded if name.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))}
tracing = {name for name in sys.modules if name in ("streamgate.tracing", "streamgate.genai_content")}
print(sorted((loaded - baseline) | sdk | tracing))
"""


def test_off_nothing_of_opentelemetry_is_imported() -> None:
    """Off: neither our tracing modules nor OpenTelemetry's SDK or exporters are imported,
    nor any OpenTelemetry module beyond the API that the provider SDKs import themselves
    (anthropic imports `opentelemetry.trace` when it is installed), through a whole chat."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    env.update(ECHO_DELAY_MS="0", MODEL_CATALOG_REFRESH_S="0", ALLOWED_HOSTS="127.0.0.1")
    result = subprocess.run(
        [sys.executable, "-c", OFF_CHECK], check=False, env=env, cwd=ROOT.parent, capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip() == "[]"


def test_a_histogram_counts_per_attribute_set_into_the_advised_buckets() -> None:
    from streamgate.tracing import TTFT_BUCKETS, GenAIHistogram

    histogram = GenAIHistogram("gen_ai.server.time_to_first_token", "s", "-", TTFT_BUCKETS)
    fast, slow = {"gen_ai.provider.name": "openai"}, {"gen_ai.provider.name": "anthropic"}
    for value, attributes in [(0.0005, fast), (0.001, fast), (0.3, fast), (12.0, slow)]:
        histogram.record(value, attributes)
    metric = histogram.metric(1, 2)
    assert metric is not None and metric.unit == "s"
    points = {point.attributes["gen_ai.provider.name"]: point for point in metric.data.data_points}
    assert points["openai"].count == 3 and points["openai"].sum == 0.3015
    assert (points["openai"].min, points["openai"].max) == (0.0005, 0.3)
    # Bounds are upper-inclusive: 0.0005 and 0.001 fall in the first bucket, 0.3 in (0.25, 0.5].
    assert points["openai"].bucket_counts[0] == 2 and points["openai"].bucket_counts[TTFT_BUCKETS.index(0.5)] == 1
    assert points["anthropic"].bucket_counts[-1] == 1 and sum(points["anthropic"].bucket_counts) == 1


def test_our_span_encoding_is_the_sdk_encoders_message() -> None:
    """`encode_spans` (bytes joined by hand) decodes to exactly the message the SDK's OTLP
    encoder builds: remote and local parents, trace state, every attribute type, statuses."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    from streamgate.tracing import _Resource, encodable, encode_spans

    ended: list[ReadableSpan] = []

    class Keep(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            ended.extend(spans)
            return SpanExportResult.SUCCESS

    provider = TracerProvider(resource=_Resource({"service.name": "streamgate-test", "replicas": 3}))
    provider.add_span_processor(SimpleSpanProcessor(Keep()))
    tracer = provider.get_tracer("streamgate")
    remote = TraceContextTextMapPropagator().extract({"traceparent": TRACEPARENT, "tracestate": "vendor=x"})
    request = tracer.start_span(
        "chat gpt-4o",
        context=remote,
        kind=SpanKind.SERVER,
        attributes={
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 3000,
            "flag": True,
            "ratio": 0.5,
            "gen_ai.response.finish_reasons": ("stop",),
            "negative": -5,
            "日本": "語 🎉",
        },
    )
    attempt = tracer.start_span(
        "POST", context=set_span_in_context(request), kind=SpanKind.CLIENT, attributes={"server.port": 443, "flag": 1}
    )
    attempt.set_status(Status(StatusCode.ERROR, "503"))
    attempt.end()
    request.set_status(Status(StatusCode.ERROR))
    request.end()
    tracer.start_span("root").end()
    assert encodable(ended)
    assert ExportTraceServiceRequest.FromString(encode_spans(ended)) == sdk_encode_spans(ended)


def test_captured_content_is_the_prompt_and_the_answer_in_the_conventions_schema(tmp_path: Path) -> None:
    """`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`: the prompt and the answer
    of a streamed and of a whole answer go on their spans, structured (maps and lists)."""
    receiver = OTLPReceiver()
    upstream = openai_like(completion(["Hi", " there"], usage=(9, 2)))
    with receiver.running(), upstream.running():
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_METRICS_EXPORTER": "none",
            "MODEL_CATALOG_REFRESH_S": "0",
            "OPENAI_API_KEY": "sk-otel",
            "OPENAI_BASE_URL": upstream.url,
        }
        messages = [{"role": "system", "content": "Be brief."}, *HELLO]
        with gateways(tmp_path, 1, **env) as [(_, url)]:
            streamed = httpx.post(
                url + "/api/v1/chat/stream",
                timeout=10,
                json={"provider": "openai", "model": "gpt-4o", "messages": messages},
            )
            assert streamed.status_code == 200 and "Hi" in streamed.text
            whole = httpx.post(url + "/v1/chat/completions", timeout=10, json={"model": "gpt-4o", "messages": messages})
            assert whole.status_code == 200 and whole.json()["choices"][0]["message"]["content"] == "Hi there"
            wait_for(lambda: sum(span.name == "chat gpt-4o" for _, span in receiver.spans) >= 2, "spans")

    requests = [attributes_of(span.attributes) for _, span in receiver.spans if span.name == "chat gpt-4o"]
    for attributes in requests:
        assert attributes["gen_ai.input.messages"] == [
            {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
            {"role": "user", "parts": [{"type": "text", "content": "Hello"}]},
        ]
        assert attributes["gen_ai.output.messages"] == [
            {"role": "assistant", "parts": [{"type": "text", "content": "Hi there"}], "finish_reason": "stop"}
        ]
        assert "gen_ai.system_instructions" not in attributes  # OpenAI's system turn is in the history
    attempts = [attributes_of(span.attributes) for _, span in receiver.spans if span.name == "POST"]
    assert attempts and not any("Hello" in json.dumps(attempt) for attempt in attempts)


def test_content_from_each_dialects_body_and_a_passthroughs_events() -> None:
    """The prompt from Anthropic's and the Responses API's bodies, the answer from the
    Messages events Anthropic streams (the SDK parses the same bytes: `wire_anthropic`)."""
    from streamgate.genai_content import input_messages, raw_parts

    anthropic_body = {
        "model": "claude-sonnet-5-5",
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x/cat.png"}}]},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"q": 1}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "a cat"}]},
        ],
    }
    system, messages = input_messages(json.dumps(anthropic_body).encode())
    assert system == [{"type": "text", "content": "Be brief."}]
    assert messages == [
        {"role": "user", "parts": [{"type": "uri", "modality": "image", "uri": "https://x/cat.png"}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "name": "look", "id": "toolu_1", "arguments": {"q": 1}}]},
        {"role": "user", "parts": [{"type": "tool_call_response", "response": "a cat", "id": "toolu_1"}]},
    ]

    responses_body = {
        "model": "gpt-5.5",
        "instructions": "Answer in French.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": '{"city": "Paris"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "rainy"},
        ],
    }
    system, messages = input_messages(json.dumps(responses_body).encode())
    assert system == [{"type": "text", "content": "Answer in French."}]
    assert [message["parts"][0] for message in messages] == [
        {"type": "text", "content": "Weather?"},
        {"type": "tool_call", "name": "weather", "id": "call_1", "arguments": {"city": "Paris"}},
        {"type": "tool_call_response", "response": "rainy", "id": "call_1"},
    ]
    assert input_messages(b"not json") == ([], [])

    events = whole_stream(
        thinking_block(0, ["Let me ", "think."]),
        text_block(1, ["Hello", " world"]),
        tool_block(2, "toolu_2", "look", ["", '{"q":', " 2}"]),
        stop_reason="tool_use",
    )
    assert sdk_message(events).content[1].text == "Hello world"  # type: ignore[union-attr]  # the bytes are Anthropic's
    assert raw_parts(events) == [
        {"type": "reasoning", "content": "Let me think."},
        {"type": "text", "content": "Hello world"},
        {"type": "tool_call", "name": "look", "id": "toolu_2", "arguments": {"q": 2}},
    ]
    whole = whole_message([{"type": "text", "text": "Hi"}])
    assert raw_parts([whole]) == [{"type": "text", "content": "Hi"}]


def test_our_span_records_encode_as_the_sdk_encodes_their_readable_spans() -> None:
    """A request's and an attempt's `SpanRecord` (structured content included) encode to the
    message the SDK's encoder builds from the same spans as its own `ReadableSpan`s."""
    import yarl
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
    from streamgate.chat_types import FinishReason, Usage
    from streamgate.pipeline import Call, StreamProgress
    from streamgate.tracing import encode_spans, readable

    tracer, ended = capturing_tracer()
    call = Call(provider="openai", model="gpt-4o", open=None, frames=None, streaming=True, send_answer=None)  # type: ignore[arg-type]
    body = json.dumps({"messages": [{"role": "user", "content": "Hi"}]}).encode()
    scope = {"headers": [(b"traceparent", TRACEPARENT.encode()), (b"tracestate", b"vendor=x")]}
    progress = StreamProgress()
    request = tracer.request(call, scope, progress.started_at, body)  # type: ignore[arg-type]
    headers: list[tuple[str, str]] = []
    request.attempt("POST", yarl.URL("http://127.0.0.1:8080/v1/chat/completions"), headers).end(503, None)
    request.attempt("POST", yarl.URL("https://api.openai.com/v1/chat/completions"), headers).end(200, None)
    assert request.content is not None
    request.content.text.append("Hello")
    progress.usage = Usage(prompt_tokens=9, completion_tokens=8, total_tokens=17)
    progress.finish_reason = FinishReason.STOP
    progress.error_type = "upstream_error"
    request.end(call, progress)
    tracer.tracer_provider.force_flush()
    assert len(ended) == 3
    assert [value for name, value in headers if name == "tracestate"] == ["vendor=x", "vendor=x"]
    assert ExportTraceServiceRequest.FromString(encode_spans(ended)) == sdk_encode_spans(readable(ended))


def test_span_limits_cut_captured_text(monkeypatch: Any) -> None:
    """`OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT` (the SDK's) cuts every string of a recorded
    span, inside the structured content too, as the SDK's own spans are cut."""
    from streamgate.pipeline import Call, StreamProgress
    from streamgate.tracing import encode_spans

    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4")
    tracer, ended = capturing_tracer()
    call = Call(provider="openai", model="gpt-4o", open=None, frames=None, streaming=True, send_answer=None)  # type: ignore[arg-type]
    progress = StreamProgress()
    request = tracer.request(call, {"headers": []}, progress.started_at, json.dumps({"messages": HELLO}).encode())  # type: ignore[arg-type]
    request.end(call, progress)
    tracer.tracer_provider.force_flush()
    [span] = ExportTraceServiceRequest.FromString(encode_spans(ended)).resource_spans[0].scope_spans[0].spans
    attributes = attributes_of(span.attributes)
    assert attributes["gen_ai.input.messages"] == [{"role": "user", "parts": [{"type": "text", "content": "Hell"}]}]
    assert attributes["gen_ai.request.model"] == "gpt-"


def test_the_sdks_sampler_decides(monkeypatch: Any) -> None:
    """`OTEL_TRACES_SAMPLER` is the SDK's: a ratio of 0 records no root span, yet its context
    still goes upstream (not sampled); under a sampled client parent, parent-based sampling
    records the request and its attempt."""
    import yarl
    from streamgate.pipeline import Call, StreamProgress

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    tracer, ended = capturing_tracer(content=False)
    call = Call(provider="openai", model="gpt-4o", open=None, frames=None, streaming=True, send_answer=None)  # type: ignore[arg-type]
    url = yarl.URL("http://127.0.0.1:8080/v1/chat/completions")
    traceparents = []
    for headers in ([], [(b"traceparent", TRACEPARENT.encode())]):
        progress = StreamProgress()
        request = tracer.request(call, {"headers": headers}, progress.started_at)  # type: ignore[arg-type]
        sent: list[tuple[str, str]] = []
        request.attempt("POST", url, sent).end(200, None)
        request.end(call, progress)
        traceparents.append(sent[0][1])
    tracer.tracer_provider.force_flush()
    assert traceparents[0].endswith("-02")  # not sampled (a random trace id, as the SDK flags it)
    assert traceparents[1].startswith(f"00-{TRACE_ID}-") and traceparents[1].endswith("-01")
    assert sorted(span.name for span in ended) == ["POST", "chat gpt-4o"]
    assert all(span.context.trace_id == int(TRACE_ID, 16) for span in ended)


def capturing_tracer(*, content: bool = True) -> tuple[Any, list[Any]]:
    """A tracer (capturing content unless `content=False`) that keeps the spans it ends (in
    the list) instead of sending them."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from streamgate.tracing import Tracer

    ended: list[Any] = []

    class Keep(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            ended.extend(spans)
            return SpanExportResult.SUCCESS

    tracer = Tracer.from_environment(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true" if content else "false",
        }
    )
    tracer.processor._batch_processor._exporter = Keep()  # type: ignore[union-attr]  # kept here, not sent
    return tracer, ended
