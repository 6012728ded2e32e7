"""The gRPC surface of `clawdbot.v1.Inference`: requests in, engine events out, nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from clawdbot.services.inference.engine import Engine, StepEvent
from clawdbot.services.inference.sequence import Finish
from clawdbot.services.inference.validation import Limits, build_sequence
from clawdbot.shared.errors import Unavailable
from clawdbot.v1 import common_pb2, inference_pb2, inference_pb2_grpc

FINISH = {
    Finish.STOP: common_pb2.FINISH_REASON_STOP,
    Finish.LENGTH: common_pb2.FINISH_REASON_LENGTH,
    Finish.ABORT: common_pb2.FINISH_REASON_ABORT,
}


def merge(events: list[StepEvent], want_logprobs: bool) -> inference_pb2.GenerateResponse:
    """One message for everything a lagging client has not read yet."""
    response = inference_pb2.GenerateResponse()
    for event in events:
        for out in event.tokens:
            response.token_ids.append(out.token)
            if want_logprobs and out.logprob is not None:
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

    def __init__(self, stream_interval: float = 0.0) -> None:
        self.stream_interval = stream_interval  # seconds; see InferenceSettings.stream_interval_ms
        self._engine: Engine | None = None
        self._info: inference_pb2.ModelInfoResponse | None = None
        self.limits: Limits | None = None

    def bind(self, engine: Engine, info: inference_pb2.ModelInfoResponse) -> None:
        self.limits = Limits(
            block_size=engine.engine_config.block_size,
            num_blocks=engine.num_blocks,
            full_attention=0 in engine.config.layer_windows,
        )
        self._engine, self._info = engine, info

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise Unavailable("the model is still loading")
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
        try:
            while not finished:
                events = [await queue.get()]
                if sent_at is not None and events[-1].finish is None:
                    wait = sent_at + self.stream_interval - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                while not queue.empty() and events[-1].finish is None:
                    events.append(queue.get_nowait())
                if events[-1].error is not None:
                    raise Unavailable(f"the engine failed this request: {events[-1].error}")
                finished = events[-1].finish is not None
                yield merge(events, seq.params.logprobs)
                sent_at = loop.time() if self.stream_interval > 0 else None
        finally:
            if not finished:  # the client went away (or the server drains): free its blocks now
                engine.abort(seq.request_id)

    async def ModelInfo(
        self, request: inference_pb2.ModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.ModelInfoResponse:
        await asyncio.sleep(0)
        if self._info is None:
            raise Unavailable("the model is still loading")
        return self._info
