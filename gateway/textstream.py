"""The streaming half of a turn: token ids from inference become text deltas, stop strings end
the reply, and the plugins' stream filter sees every delta before the client does.

Each stage is an async generator over `TextPiece`s that owns its gRPC calls: closing the
generator (the client went away, a stop string matched) cancels its calls and closes the stage
before it, so a dropped connection aborts the inference request at the end of the chain.
Bidirectional calls are fed by a pump task through `call.write`, never by a request iterator,
so an upstream error is seen here with its status instead of being swallowed by gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

import grpc

from clawdbot.gateway.stops import StopMatcher
from clawdbot.gateway.upstreams import Upstreams
from clawdbot.v1 import common_pb2, inference_pb2, plugins_pb2, tokenizer_pb2


@dataclass
class TextPiece:
    """A text delta with the token ids (and their logprobs) whose text it completes."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[common_pb2.PositionLogprobs] = field(default_factory=list)
    restart: bool = False  # the generation starts over (a replica died before the client saw any of it)


@dataclass
class StreamOutcome:
    """How the stream ended; filled in as the stages learn it."""

    finish_reason: common_pb2.FinishReason.ValueType = common_pb2.FINISH_REASON_UNSPECIFIED
    usage: common_pb2.Usage = field(default_factory=common_pb2.Usage)
    completion_ids: list[int] = field(default_factory=list)
    events: list[common_pb2.Event] = field(default_factory=list)


async def _finish_pump(task: asyncio.Task[None]) -> None:
    """Stop a pump task; what it failed with was already recorded (or no longer matters)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def detokenized(
    upstreams: Upstreams,
    request: inference_pb2.GenerateRequest,
    outcome: StreamOutcome,
    prefix_ids: Sequence[int] = (),
) -> AsyncGenerator[TextPiece, None]:
    """Generate (server stream of ids) piped into DetokenizeStream (ids in, text out)."""
    generate = upstreams.inference.Generate(request)
    detok = upstreams.tokenizer.DetokenizeStream()
    ids = outcome.completion_ids
    logprobs: list[common_pb2.PositionLogprobs] = []
    failure: list[BaseException] = []

    async def pump() -> None:
        first = True
        try:
            async for reply in generate:
                ids.extend(reply.token_ids)
                logprobs.extend(reply.logprobs)
                if reply.finish_reason:
                    outcome.finish_reason = reply.finish_reason
                    outcome.usage.CopyFrom(reply.usage)
                if reply.token_ids:
                    chunk = tokenizer_pb2.DetokenizeChunk(ids=reply.token_ids)
                    if first:
                        chunk.skip_special_tokens = True
                        chunk.prefix_ids.extend(prefix_ids)
                        first = False
                    await detok.write(chunk)
        except grpc.aio.AioRpcError as exc:
            failure.append(exc)
        except asyncio.InvalidStateError:  # the detokenizer ended the call: its status says why
            return
        with contextlib.suppress(asyncio.InvalidStateError):
            await detok.done_writing()

    task = asyncio.create_task(pump())
    consumed = 0
    try:
        async for delta in detok:
            end = max(consumed, min(int(delta.ids_consumed), len(ids)))
            piece = TextPiece(delta.text, ids[consumed:end], logprobs[consumed:end])
            consumed = end
            yield piece
        await task
        if failure:
            raise failure[0]
        if consumed < len(ids):
            yield TextPiece("", ids[consumed:], logprobs[consumed:])
    finally:
        await _finish_pump(task)
        generate.cancel()
        detok.cancel()


async def until_stop(
    pieces: AsyncGenerator[TextPiece, None], stops: Sequence[str], outcome: StreamOutcome
) -> AsyncGenerator[TextPiece, None]:
    """Cut the text at the first stop string; a match ends generation with finish reason STOP."""
    matcher = StopMatcher(stops)
    try:
        async for piece in pieces:
            text = matcher.feed(piece.text)
            if text or piece.token_ids:
                yield TextPiece(text, piece.token_ids, piece.logprobs)
            if matcher.stopped:
                outcome.finish_reason = common_pb2.FINISH_REASON_STOP
                return
        rest = matcher.flush()
        if rest:
            yield TextPiece(rest)
    finally:
        await pieces.aclose()


async def filtered(
    upstreams: Upstreams,
    turn: plugins_pb2.TurnContext,
    pieces: AsyncGenerator[TextPiece, None],
    outcome: StreamOutcome,
) -> AsyncGenerator[TextPiece, None]:
    """Plugins.FilterStream over the deltas. Token ids ride along with the next filtered delta,
    since a filter may merge, split or drop text."""
    call = upstreams.plugins.FilterStream()
    pending_ids: list[int] = []
    pending_lps: list[common_pb2.PositionLogprobs] = []
    failure: list[BaseException] = []

    async def pump() -> None:
        try:
            await call.write(plugins_pb2.FilterStreamRequest(start=plugins_pb2.FilterStreamStart(turn=turn)))
            async for piece in pieces:
                pending_ids.extend(piece.token_ids)
                pending_lps.extend(piece.logprobs)
                if piece.text:
                    await call.write(plugins_pb2.FilterStreamRequest(delta=piece.text))
            await call.done_writing()
        except Exception as exc:  # an earlier stage failed: stop the filter, report the cause
            failure.append(exc)
            call.cancel()

    task = asyncio.create_task(pump())

    def take() -> tuple[list[int], list[common_pb2.PositionLogprobs]]:
        out = (list(pending_ids), list(pending_lps))
        pending_ids.clear()
        pending_lps.clear()
        return out

    stopped = False
    try:
        try:
            async for reply in call:
                outcome.events.extend(reply.events)
                if reply.delta:
                    got_ids, got_lps = take()
                    yield TextPiece(reply.delta, got_ids, got_lps)
                if reply.stop and not stopped:
                    # A filter ended the reply (e.g. its length limit): stop generating now, but
                    # read on, since the filter may still send what it held back (a disclaimer).
                    stopped = True
                    outcome.finish_reason = common_pb2.FINISH_REASON_CONTENT_FILTER
                    await _finish_pump(task)
                    await pieces.aclose()
                    with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                        await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            # We cancelled the filter call ourselves because an earlier stage failed: report that
            # failure below. After a stop, the filter may end its stream while a delta of ours is
            # still on the way, which gRPC reports as an error of the call: the reply is complete
            # anyway. Anything else (our own task being cancelled) goes on up.
            task_cancelled = (current := asyncio.current_task()) is not None and current.cancelling() > 0
            if task_cancelled or not (failure or stopped):
                raise
        if stopped:
            return
        await task
        if failure:
            raise failure[0]
        if pending_ids:
            got_ids, got_lps = take()
            yield TextPiece("", got_ids, got_lps)
    finally:
        await _finish_pump(task)
        call.cancel()
        await pieces.aclose()
