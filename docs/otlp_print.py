"""A local OTLP/HTTP receiver that prints every span sent to it, one block per span.

    python docs/otlp_print.py [PORT]      # default 4318, OTLP/HTTP's own port

Point the gateway at it with `OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318` (see the
README, "Observability"). Metrics exports are accepted and counted, not printed. Needs
`opentelemetry-proto` (installed with `streamgate[otel]`); listens on 127.0.0.1 only.
"""

from __future__ import annotations

import gzip
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def value_of(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(item) for item in value.array_value.values]
    if kind == "kvlist_value":  # a structured value (the captured prompt and answer)
        return {item.key: value_of(item.value) for item in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path == "/v1/traces":
            for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        print_span(span)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass


def print_span(span: Any) -> None:
    parent = span.parent_span_id.hex() or "-"
    took_ms = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
    print(
        f"{span.name}  [{KINDS.get(span.kind, span.kind)}]  trace={span.trace_id.hex()} span={span.span_id.hex()} "
        f"parent={parent}  {took_ms:.1f} ms"
    )
    for attribute in span.attributes:
        print(f"    {attribute.key} = {value_of(attribute.value)!r}")
    sys.stdout.flush()


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 4318
    print(f"OTLP/HTTP receiver on http://127.0.0.1:{port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Receiver).serve_forever()
