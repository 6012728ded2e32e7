"""Every failure as an HTTP status and OpenAI's error object, decided in one place.

Domain errors (`clawdbot.shared.errors`), upstream gRPC statuses and aiohttp's own HTTP errors
all pass through `to_http`, which the error middleware calls; handlers just raise.
"""

from __future__ import annotations

from typing import Any

import grpc
from aiohttp import web

from clawdbot.gateway.openai_format import error_json
from clawdbot.shared.errors import ClawdbotError


class EdgeError(Exception):
    """A refusal at the edge (auth, rate limit, size) with its exact HTTP shape."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = headers or {}


# gRPC code -> (HTTP status, OpenAI error type, OpenAI error code)
GRPC_TO_HTTP: dict[grpc.StatusCode, tuple[int, str, str | None]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error", None),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error", None),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error", None),
    grpc.StatusCode.NOT_FOUND: (404, "invalid_request_error", "not_found"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "invalid_request_error", None),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error", "invalid_api_key"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error", None),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "server_overloaded", "server_busy"),
    grpc.StatusCode.UNAVAILABLE: (503, "service_unavailable", "upstream_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout", "upstream_timeout"),
    grpc.StatusCode.CANCELLED: (503, "service_unavailable", "cancelled"),
}


def _field_from_grpc(exc: grpc.aio.AioRpcError) -> tuple[str, str | None]:
    """Upstream messages read "field: message" (see ClawdbotError.__str__)."""
    details = exc.details() or exc.code().name
    head, sep, _ = details.partition(": ")
    if sep and head and " " not in head and len(head) < 64:
        return details, head
    return details, None


def to_http(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, OpenAI error body, extra headers) for any exception a handler let out."""
    if isinstance(exc, EdgeError):
        return exc.status, error_json(exc.message, exc.type, exc.param, exc.code), exc.headers
    if isinstance(exc, ClawdbotError):
        status, type_, code = GRPC_TO_HTTP.get(exc.code, (500, "server_error", None))
        if exc.code == grpc.StatusCode.NOT_FOUND and exc.field == "model":
            code = "model_not_found"
        return status, error_json(exc.message, type_, exc.field, code), {}
    if isinstance(exc, grpc.aio.AioRpcError):
        status, type_, code = GRPC_TO_HTTP.get(exc.code(), (502, "server_error", "upstream_error"))
        message, param = _field_from_grpc(exc)
        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in message:
            status, type_, code = 413, "invalid_request_error", "request_too_large"
        return status, error_json(message, type_, param, code), {}
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return (
            413,
            error_json("The request body is too large", "invalid_request_error", None, "request_too_large"),
            {},
        )
    if isinstance(exc, web.HTTPException):
        type_ = "invalid_request_error" if exc.status < 500 else "server_error"
        code = "not_found" if exc.status == 404 else None
        return exc.status, error_json(exc.reason, type_, None, code), {}
    return 500, error_json("The server had an error while processing your request", "server_error"), {}
