"""The one server interceptor that turns exceptions into status codes and counts every call.

Handlers raise `clawdbot.shared.errors` exceptions; here they become `context.abort` with the
code, a message naming the field, and `google.rpc.BadRequest` details in the trailers.
Anything else becomes INTERNAL and is logged with its traceback, never leaked to the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2

from clawdbot.shared.errors import ClawdbotError
from clawdbot.shared.metrics import RPC_LATENCY, RPC_REQUESTS

log = logging.getLogger("clawdbot.rpc")

STATUS_DETAILS_KEY = "grpc-status-details-bin"


def _status_details(err: ClawdbotError) -> tuple[tuple[str, bytes], ...]:
    status = status_pb2.Status(code=err.code.value[0], message=str(err))
    if err.field:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=err.field, description=err.message)
            ]
        )
        status.details.add().Pack(bad)
    return ((STATUS_DETAILS_KEY, status.SerializeToString()),)


async def _abort_for(exc: BaseException, context: grpc.aio.ServicerContext, method: str) -> None:
    if isinstance(exc, ClawdbotError):
        await context.abort(exc.code, str(exc), trailing_metadata=_status_details(exc))
    log.exception("unhandled error in %s", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}: {type(exc).__name__}")


class RpcInterceptor(grpc.aio.ServerInterceptor):
    """Error mapping + per-call metrics for every method of a server."""

    def __init__(self, service_label: str) -> None:
        self.service_label = service_label

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        label = self.service_label

        def record(code: grpc.StatusCode, started: float) -> None:
            RPC_REQUESTS.labels(label, method, code.name).inc()
            RPC_LATENCY.labels(label, method).observe(time.perf_counter() - started)

        def code_of(context: grpc.aio.ServicerContext, exc: BaseException | None) -> grpc.StatusCode:
            if isinstance(exc, ClawdbotError):
                return exc.code
            code = context.code()
            if isinstance(code, grpc.StatusCode):
                return code
            return grpc.StatusCode.OK if exc is None else grpc.StatusCode.INTERNAL

        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                try:
                    response = await inner(request, context)
                except Exception as exc:
                    record(code_of(context, exc), started)
                    if isinstance(exc, grpc.aio.AbortError):
                        raise
                    await _abort_for(exc, context, method)
                    raise
                record(code_of(context, None), started)
                return response

            factory = (
                grpc.unary_unary_rpc_method_handler
                if handler.unary_unary
                else grpc.stream_unary_rpc_method_handler
            )
            return factory(unary, handler.request_deserializer, handler.response_serializer)

        inner_stream = handler.unary_stream or handler.stream_stream

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            try:
                async for item in inner_stream(request, context):
                    yield item
            except Exception as exc:
                record(code_of(context, exc), started)
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                await _abort_for(exc, context, method)
                raise
            except BaseException:  # cancelled by the client or the drain
                record(grpc.StatusCode.CANCELLED, started)
                raise
            record(code_of(context, None), started)

        factory = (
            grpc.unary_stream_rpc_method_handler
            if handler.unary_stream
            else grpc.stream_stream_rpc_method_handler
        )
        return factory(streaming, handler.request_deserializer, handler.response_serializer)


__all__ = ["STATUS_DETAILS_KEY", "RpcInterceptor", "code_pb2"]
