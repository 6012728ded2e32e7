"""Domain errors that every service raises, and their gRPC status codes.

Handlers raise these; one server interceptor (`interceptors.RpcInterceptor`) turns them into
status codes with a message that names the field, plus `google.rpc.BadRequest` details.
"""

from __future__ import annotations

import grpc


class ClawdbotError(Exception):
    """Base of every error meant for the caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidArgument(ClawdbotError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ClawdbotError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ClawdbotError):
    code = grpc.StatusCode.ALREADY_EXISTS


class ResourceExhausted(ClawdbotError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(ClawdbotError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(ClawdbotError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ClawdbotError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(ClawdbotError):
    code = grpc.StatusCode.CANCELLED


def require(condition: bool, field: str, message: str) -> None:
    """Raise InvalidArgument naming `field` unless `condition` holds."""
    if not condition:
        raise InvalidArgument(message, field=field)
