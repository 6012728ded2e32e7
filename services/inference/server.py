"""The gRPC surface of `clawdbot.v1.Inference`: requests in, engine events out, nothing else."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

import grpc

from clawdbot.services.inference.config import ModelConfig
from clawdbot.services.inference.events import StepEvent
from clawdbot.services.inference.sequence import Finish, Sequence
from clawdbot.services.inference.validation import Limits, build_sequence
from clawdbot.shared.errors import (
    AlreadyExists,
    ClawdbotError,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from clawdbot.v1 import common_pb2, inference_pb2, inference_pb2_grpc

FINISH = {
    Finish.STOP: common_pb2.FINISH_REASON_STOP,
    Finish.LENGTH: common_pb2.FINISH_REASON_LENGTH,
    Finish.ABORT: common_pb2.FINISH_REASON_ABORT,
}


class EngineHandle(Protocol):
    """What the servicer needs of an engine: `Engine` in this process, or `EngineClient` to a core."""

    @property
    def config(self) -> ModelConfig: ...

    def submit(self, seq: Sequence) -> asyncio.Queue[StepEvent]: ...

    def abort(self, request_id: str) -> object: ...


MIN_WAIT = 0.001  # seconds; a shorter wait between two messages is not worth a timer
# A burst: this many calls opened within BURST_WINDOW seconds (320 a second, more new requests than
# an engine can start; a steady load stays far below it).
BURST_CALLS = 16
BURST_WINDOW = 0.05
DEADLINE_MARGIN = 0.05  # seconds before a call's deadline by which held tokens go out


REFUSALS: dict[str, type[ClawdbotError]] = {
    "RESOURCE_EXHAUSTED": ResourceExhausted,
    "ALREADY_EXISTS": AlreadyExists,
    # The core's own check of a request's grounding (validation refuses such requests first).
    "FAILED_PRECONDITION": FailedPrecondition,
    "INVALID_ARGUMENT": InvalidArgument,
}


def failure(event: StepEvent) -> ClawdbotError:
    """The error a stream ends with: a refusal keeps its status code, anything else is UNAVAILABLE."""
    refusal = REFUSALS.get(event.error_code or "")
    if refusal is not None:
        return refusal(event.error or "refused")
    return Unavailable(f"the engine failed this request: {event.error}")


def merge(events: list[StepEvent], want_logprobs: bool) -> inference_pb2.GenerateResponse:
    """One message for everything a lagging client has not read yet."""
    response = inference_pb2.GenerateResponse()
    if not want_logprobs:  # one extend, not an append per token: 2.5 us instead of 7 for 20 tokens
        response.token_ids.extend([out.token for event in events for out in event.tokens])
    for event in events:
        if want_logprobs:
            for out in event.tokens:
                response.token_ids.append(out.token)
                if out.logprob is not None:
                    position = response.logprobs.add()
                    position.chosen.token_id = out.token
                    position.chosen.logprob = out.logprob
                    for token, logprob in out.top or []:
                        position.top.add(token_id=token, logprob=logprob)
        if event.finish is not None:
            response.finish_reason = FINISH[event.finish]
            if event.stop_token_id is not None:
                response.stop_token_id = event.stop_token_id
            response.usage.prompt_tokens = event.prompt_tokens
            response.usage.completion_tokens = event.completion_tokens
            response.usage.total_tokens = event.prompt_tokens + event.completion_tokens
            response.usage.cached_prompt_tokens = event.cached_tokens
    return response


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    """Registered when the port opens; answers UNAVAILABLE until `bind` hands it the loaded engine."""

    def __init__(
        self, stream_interval: float = 0.0, stream_pacing: float = 0.0, burst_hold: float = 0.0
    ) -> None:
        # Seconds; see InferenceSettings.stream_interval_ms, stream_pacing_us and stream_burst_hold_ms.
        self.stream_interval = stream_interval
        self.stream_pacing = stream_pacing
        self.burst_hold = burst_hold
        self.open_streams = 0
        self._opened: deque[float] = deque(maxlen=BURST_CALLS)  # when the last calls opened
        self._burst_until = 0.0
        self._engine: EngineHandle | None = None
        self._info: inference_pb2.ModelInfoResponse | None = None
        self._unbound_reason = "the model is still loading"
        self.limits: Limits | None = None

    def bind(self, engine: EngineHandle, info: inference_pb2.ModelInfoResponse, limits: Limits) -> None:
        self.limits = limits
        self._engine, self._info = engine, info

    def unbind(self, reason: str) -> None:
        """New calls answer UNAVAILABLE with `reason` until the next `bind`."""
        self._engine, self._unbound_reason = None, reason

    @property
    def engine(self) -> EngineHandle:
        if self._engine is None:
            raise Unavailable(self._unbound_reason)
        return self._engine

    async def Generate(
        self, request: inference_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[inference_pb2.GenerateResponse]:
        engine = self.engine
        assert self.limits is not None
        seq = build_sequence(request, engine.config, self.limits, context.time_remaining())
        queue = engine.submit(seq)
        finished = False
        loop = asyncio.get_running_loop()
        sent_at: float | None = None
        self._opening(loop.time())
        try:
            while not finished:
                # Sleep first, then take what arrived: one wake-up a message, not two.
                wait = 0.0 if sent_at is None else self._hold(sent_at, loop.time(), context)
                if wait > MIN_WAIT:
                    await asyncio.sleep(wait)
                events = [await queue.get()]
                while not queue.empty() and events[-1].finish is None:
                    events.append(queue.get_nowait())
                if events[-1].error is not None:
                    finished = True  # the engine has forgotten it: nothing to abort
                    if any(event.tokens for event in events[:-1]):
                        yield merge(events[:-1], seq.params.logprobs)  # the tokens held before it
                    raise failure(events[-1])
                finished = events[-1].finish is not None
                yield merge(events, seq.params.logprobs)
                sent_at = loop.time()
        finally:
            self.open_streams -= 1
            if not finished:  # the client went away (or the server drains): free its blocks now
                engine.abort(seq.request_id)

    def _opening(self, now: float) -> None:
        """Count a new stream; a burst of them makes the open ones hold their messages a while."""
        self.open_streams += 1
        self._opened.append(now)
        if len(self._opened) == BURST_CALLS and now - self._opened[0] < BURST_WINDOW:
            self._burst_until = now + BURST_WINDOW

    def _hold(self, sent_at: float, now: float, context: grpc.aio.ServicerContext) -> float:
        """Seconds to wait before taking a stream's next tokens; what is held still reaches a caller
        with a deadline (`DEADLINE_MARGIN` before it)."""
        wait = sent_at + self.least_interval(now) - now
        if wait <= MIN_WAIT:
            return 0.0
        remaining = context.time_remaining()
        return wait if remaining is None else min(wait, remaining - DEADLINE_MARGIN)

    def least_interval(self, now: float) -> float:
        """Seconds a stream's next message waits after its last one.

        The fixed interval, or the pacing times the streams open now if that is longer: every
        message costs this process tens of microseconds of Python, so the more streams share it,
        the fewer messages each gets. During a burst of new calls (and `BURST_WINDOW` after it),
        `burst_hold` if that is longer still: grpc aio accepts calls one at a time, each after a
        few turns of the event loop, so the open streams' messages would delay the new calls'
        first tokens, which count more to the people waiting for them.
        """
        interval = max(self.stream_interval, self.stream_pacing * self.open_streams)
        if now < self._burst_until:
            return max(interval, self.burst_hold)
        return interval

    async def ModelInfo(
        self, request: inference_pb2.ModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.ModelInfoResponse:
        await asyncio.sleep(0)
        if self._info is None:
            raise Unavailable("the model is still loading")
        return self._info
