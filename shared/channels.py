"""The one client-channel factory: deadlines on every call, retries on UNAVAILABLE, tracing.

Retries come from the gRPC service config (transparent to callers, bounded, with backoff);
calls made without a timeout get the default deadline, so no call can hang forever.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from clawdbot.shared.telemetry import client_interceptors

DEFAULT_UNARY_TIMEOUT_S = 30.0
DEFAULT_STREAM_TIMEOUT_S = 600.0


def retry_service_config(max_attempts: int = 4) -> str:
    """Retry UNAVAILABLE with exponential backoff for every method of every service."""
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{}],
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def _with_default_timeout(details: grpc.aio.ClientCallDetails, seconds: float) -> grpc.aio.ClientCallDetails:
    if details.timeout is not None:
        return details
    return grpc.aio.ClientCallDetails(
        method=details.method,
        timeout=seconds,
        metadata=details.metadata,
        credentials=details.credentials,
        wait_for_ready=details.wait_for_ready,
    )


class _DefaultDeadlineUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_with_default_timeout(client_call_details, self.seconds), request)


class _DefaultDeadlineUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_with_default_timeout(client_call_details, self.seconds), request)


class _DefaultDeadlineStreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(_with_default_timeout(client_call_details, self.seconds), request_iterator)


def create_channel(
    target: str,
    *,
    unary_timeout_s: float = DEFAULT_UNARY_TIMEOUT_S,
    stream_timeout_s: float = DEFAULT_STREAM_TIMEOUT_S,
    max_message_bytes: int = 8 * 1024 * 1024,
    max_attempts: int = 4,
    extra_options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """An insecure grpc.aio channel to `target` (host:port) with the mesh's defaults."""
    options: list[tuple[str, Any]] = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", retry_service_config(max_attempts)),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        *extra_options,
    ]
    interceptors: list[Any] = [
        *client_interceptors(),
        _DefaultDeadlineUnary(unary_timeout_s),
        _DefaultDeadlineUnaryStream(stream_timeout_s),
        _DefaultDeadlineStreamStream(stream_timeout_s),
    ]
    return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
