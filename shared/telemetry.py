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
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler, SamplingResult

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

    `none` exports nothing and records nothing, but every request still gets a trace id that
    reaches the logs (see `RecordWhenExported`); `console` prints spans to stderr; `file` appends
    one JSON span per line; `otlp` sends to a collector.
    """
    global _provider
    if _provider is not None:
        return _provider
    processor = _processor_for(exporter, endpoint, file)
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"clawdbot-{service_name}"}),
        sampler=RecordWhenExported(exporting=processor is not None),
    )
    if processor is not None:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    atexit.register(provider.shutdown)
    _provider = provider
    return provider


def _processor_for(exporter: str, endpoint: str | None, file: Path | None) -> SpanProcessor | None:
    """Where `exporter` sends spans (None for `none`); raises on a bad setting before anything is installed."""
    if exporter == "none":
        return None
    if exporter == "console":
        return BatchSpanProcessor(ConsoleSpanExporter(formatter=_span_line))
    if exporter == "file":
        if file is None:
            raise ValueError("otel_exporter=file needs otel_file")
        out: TextIO = Path(file).open("a", encoding="utf-8", buffering=1)  # noqa: SIM115 (lives as long as the process)
        return SimpleSpanProcessor(ConsoleSpanExporter(out=out, formatter=_span_line))
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter())
    raise ValueError(f"unknown otel exporter {exporter!r}")


def export_spans(processor: SpanProcessor) -> None:
    """Hand this process's spans to `processor` (after `setup_tracing`); spans are recorded from now on."""
    if _provider is None:
        raise RuntimeError("setup_tracing first")
    _provider.add_span_processor(processor)
    sampler = _provider.sampler
    if isinstance(sampler, RecordWhenExported):
        sampler.exporting = True


class RecordWhenExported(Sampler):
    """Records spans once something exports them, whatever the caller decided: tracing turned on
    for one service alone still shows its spans, inside the caller's trace.

    A span not recorded still has a trace id (the caller's, or a new one): the logs carry it, and it
    travels on to the services called. It keeps no attributes or events: recording spans that went
    nowhere cost the inference service 5-8% of its CPU time per Generate call in bursts of 256
    calls (docs/perf.md), time in which its event loop accepts no other call.
    """

    def __init__(self, exporting: bool = False) -> None:
        self.exporting = exporting

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return (ALWAYS_ON if self.exporting else ALWAYS_OFF).should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return f"RecordWhenExported(exporting={self.exporting})"


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
