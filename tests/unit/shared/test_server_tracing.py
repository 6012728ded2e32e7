"""ServerTracing: the caller's trace continues in the handler, recorded only while exported."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clawdbot.shared import telemetry
from clawdbot.shared.telemetry import RecordWhenExported, ServerTracing

SERVICE = "test.Trace"


def _current() -> bytes:
    """What the handler sees: its span's trace id, span id and whether it records."""
    span = trace.get_current_span()
    ctx = span.get_span_context()
    return f"{ctx.trace_id:032x} {ctx.span_id:016x} {int(span.is_recording())}".encode()


async def _unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return _current()


async def _stream(request: bytes, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
    for _ in range(3):
        yield _current()


async def _written(request: bytes, context: grpc.aio.ServicerContext) -> None:
    for _ in range(2):
        await context.write(_current())


async def _fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise RuntimeError("handler failed")


class _Counted:
    """Counts the calls that go through OpenTelemetry's own interceptor."""

    def __init__(self, inner: grpc.aio.ServerInterceptor) -> None:
        self.inner, self.calls = inner, 0

    async def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        self.calls += 1
        return await self.inner.intercept_service(continuation, details)


async def _serve(tracing: ServerTracing | TracerProvider | None) -> tuple[grpc.aio.Server, int]:
    if not isinstance(tracing, ServerTracing):
        tracing = ServerTracing(tracing)
    server = grpc.aio.server(interceptors=[tracing])
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream),
        "Written": grpc.unary_stream_rpc_method_handler(_written),
        "Fail": grpc.unary_unary_rpc_method_handler(_fail),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def _traceparent(trace_id: str, span_id: str) -> tuple[tuple[str, str], ...]:
    return (("traceparent", f"00-{trace_id}-{span_id}-00"),)


@pytest.mark.asyncio
async def test_not_exported_the_handler_continues_the_callers_trace_without_recording() -> None:
    tracing = ServerTracing(TracerProvider(sampler=RecordWhenExported()))
    tracing._recording = counted = _Counted(tracing._recording)
    server, port = await _serve(tracing)
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    caller = _traceparent(caller_trace, caller_span)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            unary = channel.unary_unary(f"/{SERVICE}/Unary")
            seen = (await unary(b"", metadata=caller)).decode().split()
            assert seen[0] == caller_trace and seen[1] != caller_span and seen[2] == "0"
            # Every message of a stream runs in the caller's trace, yielded or written.
            for method in ("Stream", "Written"):
                stream = channel.unary_stream(f"/{SERVICE}/{method}")
                messages = [m.decode().split() async for m in stream(b"", metadata=caller)]
                assert len(messages) >= 2 and {m[0] for m in messages} == {caller_trace}
            # A failed call leaves nothing behind for the calls after it.
            with pytest.raises(grpc.aio.AioRpcError):
                await channel.unary_unary(f"/{SERVICE}/Fail")(b"", metadata=caller)
            # No caller context: a trace of its own per call, still valid for the logs.
            first, second = [(await unary(b"")).decode().split() for _ in range(2)]
            assert caller_trace not in (first[0], second[0])
            assert first[0] != second[0] and int(first[0], 16) != 0 and first[2] == "0"
        assert counted.calls == 0  # the lean path: OpenTelemetry's interceptor never ran
    finally:
        await server.stop(None)


@pytest.mark.asyncio
async def test_spans_of_a_provider_installed_before_ours_are_recorded_and_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`setup_tracing` lost the race to another global provider (opentelemetry-instrument, a host
    application): the spans that provider makes record, so they must go the full way and end."""
    exported = InMemorySpanExporter()
    theirs = TracerProvider()
    theirs.add_span_processor(SimpleSpanProcessor(exported))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: theirs)
    monkeypatch.setattr(telemetry, "_provider", TracerProvider(sampler=RecordWhenExported()))
    server, port = await _serve(None)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            seen = (await channel.unary_unary(f"/{SERVICE}/Unary")(b"")).decode().split()
        assert seen[2] == "1"
        (span,) = exported.get_finished_spans()
        assert span.kind == trace.SpanKind.SERVER and span.name == f"/{SERVICE}/Unary"
    finally:
        await server.stop(None)


@pytest.mark.asyncio
async def test_exported_the_call_is_a_recorded_server_span_in_the_callers_trace() -> None:
    exported = InMemorySpanExporter()
    provider = TracerProvider(sampler=RecordWhenExported(exporting=True))
    provider.add_span_processor(SimpleSpanProcessor(exported))
    server, port = await _serve(provider)
    caller_trace, caller_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stream = channel.unary_stream(f"/{SERVICE}/Stream")
            messages = [
                m.decode().split()
                async for m in stream(b"", metadata=_traceparent(caller_trace, caller_span))
            ]
        assert {m[2] for m in messages} == {"1"}
        (span,) = exported.get_finished_spans()
        assert span.kind == trace.SpanKind.SERVER and span.name == f"/{SERVICE}/Stream"
        assert f"{span.context.trace_id:032x}" == caller_trace
        assert span.parent is not None and f"{span.parent.span_id:016x}" == caller_span
        assert span.attributes is not None and span.attributes["rpc.method"] == "Stream"
    finally:
        await server.stop(None)
