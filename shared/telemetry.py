"""One OpenTelemetry setup for every process: tracer provider, exporter, gRPC instrumentation.

W3C trace context travels through gRPC metadata via the grpc aio instrumentation's interceptors,
so one chat turn is one trace across processes.
"""

from __future__ import annotations

import atexit
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
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


def exporting(provider: trace.TracerProvider | None = None) -> bool:
    """Whether spans recorded now would go somewhere (`setup_tracing` with an exporter, or
    `export_spans`); `provider`: another than the global one.

    It asks the global provider, the one whose tracers make the spans, not the one `setup_tracing`
    built: where something else installed a provider first (`opentelemetry-instrument`, a host
    application), OpenTelemetry keeps that one, and its spans may record and export.
    """
    provider = provider or trace.get_tracer_provider()
    sampler = getattr(provider, "sampler", None)
    if sampler is None:  # the API's own provider (no SDK installed): nothing records
        return False
    return not isinstance(sampler, RecordWhenExported) or sampler.exporting


class ServerTracing(grpc.aio.ServerInterceptor):
    """Continues the caller's trace in a grpc.aio server; full server spans only while exported.

    While spans are exported, each call goes through OpenTelemetry's own grpc aio interceptor (a
    recorded SERVER span with the standard rpc.* and net.* attributes). While they are not, it costs
    next to nothing: the caller's W3C context (or none) becomes the parent of a non-recording span
    that is made current for the call's task, so the logs carry its trace id and the calls it makes
    carry it on. OpenTelemetry's interceptor does more per call even then (a context proxy, the
    peer and metadata parsed into attributes nobody records, one more async generator per streamed
    message): on the inference service it was a third of a 256-call burst's time to first token
    (docs/perf.md).

    Attaching without detaching is safe here: grpc aio runs the interceptors and the handler in
    one task per call, and a task's context changes die with it.
    """

    def __init__(self, provider: TracerProvider | None = None) -> None:
        """`provider`: the global one (what `setup_tracing` installed) unless given."""
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        self._provider = provider
        self._recording = aio_server_interceptor(tracer_provider=provider)
        self._tracer = trace.get_tracer(__name__, tracer_provider=provider)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if exporting(self._provider):
            return await self._recording.intercept_service(continuation, handler_call_details)
        metadata = handler_call_details.invocation_metadata or ()
        # Extracted into a fresh context: a call without a traceparent starts a trace of its own.
        parent = propagate.extract({key: value for key, value in metadata})
        span = self._tracer.start_span(
            handler_call_details.method,
            context=parent,
            kind=trace.SpanKind.SERVER,
        )
        otel_context.attach(trace.set_span_in_context(span, parent))
        return await continuation(handler_call_details)


def server_interceptors() -> list[Any]:
    """Interceptors that continue the caller's trace in a grpc.aio server."""
    return [ServerTracing()]


def client_interceptors() -> list[Any]:
    """Interceptors that send the current trace context with every grpc.aio client call."""
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)
