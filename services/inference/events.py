"""What the engine hands to a request's consumer each step, in a form that crosses a process boundary.

These are msgspec structs, not dataclasses: the engine builds one per token per step (cheaper to
construct), and the engine core process sends each step's events to the gRPC process as one
MessagePack frame (`wire.py`) that decodes straight back into these types. No torch here: the
gRPC process imports this module and nothing of the model.

Both are `gc=False`: the collector never tracks them. They hold only numbers, strings and lists of
those, so they cannot be part of a reference cycle, and tracked they were most of what the
collector scanned. At 256 streams every step makes and decodes a thousand of them, and the
gRPC process keeps several steps' worth queued. Decoding one chained step's frame (256 requests x
4 tokens) took 560 us with them tracked and 110 us without, on the CPU box with the gRPC process's
heap; on the H100 the gRPC process's CPU per 256-stream load fell from 0.57 to 0.49 s (docs/perf.md).
"""

from __future__ import annotations

import msgspec

from clawdbot.services.inference.sequence import Finish


class TokenOutput(msgspec.Struct, array_like=True, gc=False):
    """The token a sequence got this step, with its logprob and the top alternatives when asked."""

    token: int
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None


class StepEvent(msgspec.Struct, array_like=True, gc=False):
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
