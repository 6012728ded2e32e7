"""How long a Generate stream's next message waits: pacing by open streams, and the burst hold."""

from __future__ import annotations

import asyncio
import time

import pytest

from clawdbot.services.inference.config import parse_config
from clawdbot.services.inference.dummy import COMMON, SHAPES
from clawdbot.services.inference.events import StepEvent, TokenOutput
from clawdbot.services.inference.sequence import Finish, Sequence
from clawdbot.services.inference.server import BURST_CALLS, BURST_WINDOW, InferenceServicer, merge
from clawdbot.services.inference.validation import Limits
from clawdbot.shared.errors import AlreadyExists, Unavailable
from clawdbot.v1 import common_pb2, inference_pb2


def servicer() -> InferenceServicer:
    return InferenceServicer(stream_interval=0.002, stream_pacing=0.0001, burst_hold=0.2)


def test_the_interval_grows_with_the_streams_open_and_never_falls_below_the_fixed_one() -> None:
    paced = servicer()
    assert paced.least_interval(0.0) == 0.002
    for i in range(100):  # one call a second: no burst
        paced._opening(float(i))
    assert abs(paced.least_interval(100.0) - 0.01) < 1e-12  # 100 streams x 100 us


def test_a_burst_of_calls_holds_the_open_streams_until_it_has_passed() -> None:
    burst = servicer()
    start = 10.0
    for i in range(BURST_CALLS):
        burst._opening(start + i * 0.001)
    last = start + (BURST_CALLS - 1) * 0.001
    assert burst.least_interval(last) == 0.2
    assert burst.least_interval(last + BURST_WINDOW * 0.9) == 0.2
    assert burst.least_interval(last + BURST_WINDOW * 1.1) == max(0.002, 0.0001 * BURST_CALLS)


def test_calls_spread_wider_than_the_window_are_no_burst() -> None:
    steady = servicer()
    gap = BURST_WINDOW / (BURST_CALLS - 2)  # BURST_CALLS calls span more than the window
    for i in range(3 * BURST_CALLS):
        steady._opening(i * gap)
        assert steady.least_interval(i * gap) < 0.2


def test_no_hold_when_it_is_turned_off() -> None:
    plain = InferenceServicer(stream_pacing=0.0001)
    for _ in range(BURST_CALLS):
        plain._opening(5.0)
    assert plain.least_interval(5.0) == 0.0001 * BURST_CALLS


class FakeEngine:
    """What the servicer needs of an engine; the test puts the events on the queues itself."""

    def __init__(self, refuse: bool = False) -> None:
        self.config = parse_config({**SHAPES["tiny"], **COMMON})
        self.queues: dict[str, asyncio.Queue[StepEvent]] = {}
        self.aborted: list[str] = []
        self.refuse = refuse

    def submit(self, seq: Sequence) -> asyncio.Queue[StepEvent]:
        if self.refuse:
            raise AlreadyExists("a request with this id is running", field="request_id")
        self.queues[seq.request_id] = asyncio.Queue()
        return self.queues[seq.request_id]

    def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)


class FakeContext:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


def bound(engine: FakeEngine, pacing: float) -> InferenceServicer:
    paced = InferenceServicer(stream_pacing=pacing)
    paced.bind(engine, inference_pb2.ModelInfoResponse(), Limits(16, 1000, False))
    return paced


def call(rid: str) -> inference_pb2.GenerateRequest:
    return inference_pb2.GenerateRequest(
        request_id=rid,
        prompt_token_ids=[5, 6, 7],
        sampling=inference_pb2.SamplingParams(max_tokens=10, ignore_eos=True),
    )


def token(t: int) -> StepEvent:
    return StepEvent(tokens=[TokenOutput(t)])


async def test_a_stream_cancelled_while_it_holds_its_tokens_is_uncounted_and_aborted_once() -> None:
    engine = FakeEngine()
    paced = bound(engine, pacing=10.0)  # one open stream: 10 s between messages
    stream = paced.Generate(call("held"), FakeContext(None))  # type: ignore[arg-type]
    first = asyncio.create_task(anext(stream))
    await asyncio.sleep(0)
    engine.queues["held"].put_nowait(token(11))
    assert list((await first).token_ids) == [11]  # the first token is not held
    engine.queues["held"].put_nowait(token(12))
    waiting = asyncio.create_task(anext(stream))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # held
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert paced.open_streams == 0 and engine.aborted == ["held"]


async def test_held_tokens_go_out_before_the_deadline_and_before_an_error() -> None:
    engine = FakeEngine()
    paced = bound(engine, pacing=10.0)
    stream = paced.Generate(call("late"), FakeContext(0.2))  # type: ignore[arg-type]
    first = asyncio.create_task(anext(stream))
    await asyncio.sleep(0)
    engine.queues["late"].put_nowait(token(11))
    await first
    for event in (token(12), token(13), StepEvent(error="the engine failed")):
        engine.queues["late"].put_nowait(event)
    started = time.monotonic()
    held = await asyncio.wait_for(anext(stream), 5)
    assert time.monotonic() - started < 1.0  # the 10 s hold gave way to the 0.2 s deadline
    assert list(held.token_ids) == [12, 13]
    with pytest.raises(Unavailable):
        await anext(stream)
    assert paced.open_streams == 0 and engine.aborted == []  # the engine had already ended it


async def test_a_refused_call_is_never_counted_open() -> None:
    paced = bound(FakeEngine(refuse=True), pacing=0.001)
    with pytest.raises(AlreadyExists):
        await anext(paced.Generate(call("twice"), FakeContext(None)))  # type: ignore[arg-type]
    assert paced.open_streams == 0


@pytest.mark.parametrize("want_logprobs", [False, True])
def test_merged_events_keep_every_token_in_order_and_the_finish_of_the_last(want_logprobs: bool) -> None:
    events = [
        StepEvent(tokens=[TokenOutput(5, -0.1, [(5, -0.1), (6, -2.0)])]),
        StepEvent(tokens=[TokenOutput(7, -0.2), TokenOutput(8, -0.3)]),
        StepEvent(tokens=[], finish=Finish.STOP, stop_token_id=2, prompt_tokens=4, completion_tokens=3),
    ]
    message = merge(events, want_logprobs)
    assert list(message.token_ids) == [5, 7, 8]
    assert message.finish_reason == common_pb2.FINISH_REASON_STOP and message.stop_token_id == 2
    assert message.usage.total_tokens == 7
    if want_logprobs:
        assert [p.chosen.token_id for p in message.logprobs] == [5, 7, 8]
        top = message.logprobs[0].top
        assert [t.token_id for t in top] == [5, 6] and [t.logprob for t in top] == pytest.approx([-0.1, -2.0])
    else:
        assert not message.logprobs
