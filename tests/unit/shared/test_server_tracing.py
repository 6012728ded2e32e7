"""ServerTracing: the caller's trace continues in the handler, recorded only while exported."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

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


async def _serve(provider: TracerProvider) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(interceptors=[ServerTracing(provider)])
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def _traceparent(trace_id: str, span_id: str) -> tuple[tuple[str, str], ...]:
    return (("traceparent", f"00-{trace_id}-{span_id}-00"),)


@pytest.mark.asyncio
async def test_not_exported_the_handler_continues_the_callers_trace_without_recording() -> None:
    provider = TracerProvider(sampler=RecordWhenExported())
    server, port = await _serve(provider)
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            unary = channel.unary_unary(f"/{SERVICE}/Unary")
            stream = channel.unary_stream(f"/{SERVICE}/Stream")
            seen = (await unary(b"", metadata=_traceparent(caller_trace, caller_span))).decode().split()
            assert seen[0] == caller_trace and seen[1] != caller_span and seen[2] == "0"
            # Every message of a stream runs in the caller's trace.
            messages = [
                m.decode().split()
                async for m in stream(b"", metadata=_traceparent(caller_trace, caller_span))
            ]
            assert len(messages) == 3 and {m[0] for m in messages} == {caller_trace}
            # No caller context: a trace of its own per call, still valid for the logs.
            first, second = [(await unary(b"")).decode().split() for _ in range(2)]
            assert first[0] != second[0] and int(first[0], 16) != 0 and first[2] == "0"
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
