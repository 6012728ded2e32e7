"""What the engine hands to a request's consumer each step, in a form that crosses a process boundary.

These are msgspec structs, not dataclasses: the engine builds one per token per step (cheaper to
construct), and the engine core process sends each step's events to the gRPC process as one
MessagePack frame (`wire.py`) that decodes straight back into these types. No torch here: the
gRPC process imports this module and nothing of the model.
"""

from __future__ import annotations

import msgspec

from clawdbot.services.inference.sequence import Finish


class TokenOutput(msgspec.Struct, array_like=True):
    """The token a sequence got this step, with its logprob and the top alternatives when asked."""

    token: int
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None


class StepEvent(msgspec.Struct, array_like=True):
    """What one step produced for one request (tokens may be empty on a final ABORT)."""

    tokens: list[TokenOutput] = []
    finish: Finish | None = None
    stop_token_id: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    error: str | None = None
    error_code: str | None = None  # a grpc.StatusCode name when the request was refused (None: UNAVAILABLE)
    step: int = 0  # the engine step count when it was emitted
