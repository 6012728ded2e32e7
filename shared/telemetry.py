"""One OpenTelemetry setup for every process: tracer provider, exporter, gRPC instrumentation.

W3C trace context travels through gRPC metadata via the grpc aio instrumentation's interceptors,
so one chat turn is one trace across processes.
"""

from __future__ import annotations

import atexit
from pathlib import Path
from typing import Any, TextIO

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

_provider: TracerProvider | None = None


def _span_line(span: ReadableSpan) -> str:
    return span.to_json(indent=None) + "\n"


def setup_tracing(
    service_name: str,
    exporter: str = "none",
    endpoint: str | None = None,
    file: Path | None = None,
) -> TracerProvider:
    """Install the global tracer provider once per process and return it.

    `none` still creates spans (so trace ids reach the logs) but exports nothing; `console`
    prints spans to stderr; `file` appends one JSON span per line; `otlp` sends to a collector.
    """
    global _provider
    if _provider is not None:
        return _provider
    provider = TracerProvider(resource=Resource.create({"service.name": f"clawdbot-{service_name}"}))
    span_exporter: SpanExporter | None = None
    if exporter == "console":
        span_exporter = ConsoleSpanExporter(formatter=_span_line)
    elif exporter == "file":
        if file is None:
            raise ValueError("otel_exporter=file needs otel_file")
        out: TextIO = Path(file).open("a", encoding="utf-8", buffering=1)  # noqa: SIM115 (lives as long as the process)
        span_exporter = ConsoleSpanExporter(out=out, formatter=_span_line)
        provider.add_span_processor(SimpleSpanProcessor(span_exporter))
        span_exporter = None
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
    elif exporter != "none":
        raise ValueError(f"unknown otel exporter {exporter!r}")
    if span_exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    atexit.register(provider.shutdown)
    _provider = provider
    return provider


def server_interceptors() -> list[Any]:
    """Interceptors that continue the caller's trace in a grpc.aio server."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor()]


def client_interceptors() -> list[Any]:
    """Interceptors that send the current trace context with every grpc.aio client call."""
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)
