"""The engine core's frames: every message survives the trip through both channel ends unchanged."""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
from dataclasses import replace

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from clawdbot.services.inference.config import parse_config
from clawdbot.services.inference.events import StepEvent, TokenOutput
from clawdbot.services.inference.sequence import Finish, SamplingParams
from clawdbot.services.inference.testing import tiny_config
from clawdbot.services.inference.validation import Limits
from clawdbot.services.inference.wire import (
    Abort,
    Add,
    AsyncChannel,
    BlockingChannel,
    Events,
    FromCore,
    Metrics,
    MetricsQuery,
    Ready,
    Start,
    frame,
)

token_ids = st.integers(min_value=0, max_value=2**31 - 1)
logprobs = st.floats(allow_nan=False, allow_infinity=False, max_value=0.0)
outputs = st.builds(
    TokenOutput,
    token=token_ids,
    logprob=st.none() | logprobs,
    top=st.none() | st.lists(st.tuples(token_ids, logprobs), max_size=5),
)
events = st.builds(
    StepEvent,
    tokens=st.lists(outputs, max_size=4),
    finish=st.none() | st.sampled_from(Finish),
    stop_token_id=st.none() | token_ids,
    prompt_tokens=st.integers(0, 1 << 20),
    completion_tokens=st.integers(0, 1 << 20),
    cached_tokens=st.integers(0, 1 << 20),
    error=st.none() | st.text(max_size=40),
    error_code=st.none() | st.sampled_from(["RESOURCE_EXHAUSTED", "ALREADY_EXISTS"]),
    step=st.integers(0, 1 << 40),
)
request_ids = st.text(min_size=1, max_size=40)


def through_the_socket(messages: list[object], to_core: bool) -> list[object]:
    """Send with one end of a socket pair, read with the other (the ends the two processes use)."""
    ours, theirs = socket.socketpair()
    core = BlockingChannel(theirs)

    async def exchange() -> list[object]:
        channel = await AsyncChannel.open(ours)
        try:
            if to_core:
                for message in messages:
                    channel.send(message)  # type: ignore[arg-type]
                channel.close_write()
                received: list[object] = []
                await asyncio.to_thread(lambda: received.extend(iter(core.receive, None)))
                return received
            sender = threading.Thread(target=lambda: [core.send(m) for m in messages])  # type: ignore[arg-type]
            sender.start()
            got = [await channel.receive() for _ in messages]
            sender.join()
            return got
        finally:
            channel.close()

    try:
        return asyncio.run(exchange())
    finally:
        core.close()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(request_ids, events), max_size=300), st.integers(0, 1 << 30))
def test_events_and_metrics_reach_the_grpc_process_unchanged(
    items: list[tuple[str, StepEvent]], ask: int
) -> None:
    messages: list[object] = [Events(items), Metrics(ask, "clawdbot_inference_x 1.0\n"), Events([])]
    assert through_the_socket(messages, to_core=False) == messages


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.builds(
                Add,
                request_id=request_ids,
                token_ids=st.lists(token_ids, min_size=1, max_size=200),
                params=st.builds(
                    SamplingParams,
                    temperature=st.floats(0, 2),
                    stop_token_ids=st.lists(token_ids, max_size=3).map(tuple),
                    max_tokens=st.integers(0, 8192),
                ),
                priority=st.integers(-10, 10),
                deadline=st.none() | st.floats(0, 1e9),
                arrival_time=st.floats(0, 1e9),
                grounding=st.none() | st.text(max_size=200),
            ),
            st.builds(Abort, request_id=request_ids),
            st.builds(MetricsQuery, ask=st.integers(0, 1 << 30)),
        ),
        max_size=50,
    )
)
def test_requests_reach_the_core_unchanged_and_in_order(messages: list[object]) -> None:
    assert through_the_socket([Start("{}"), *messages], to_core=True) == [Start("{}"), *messages]


def test_ready_carries_the_model_config_and_limits() -> None:
    # The tiny test model's config, as the loader parses it, with a pre-quantized format on top.
    config = replace(parse_config(tiny_config("mistral").to_dict()), quantization={"group_size": 128})
    limits = Limits(
        block_size=16,
        num_blocks=257,
        full_attention=False,
        grounding="on",
        grounding_digits=frozenset(range(15, 25)),
    )
    ready = Ready(b"\x08\x01", config, limits)
    [back] = through_the_socket([ready], to_core=False)
    assert (
        back == ready
        and isinstance(back, Ready)
        and back.config.context_length == 512 == config.context_length
    )


def test_a_frame_is_its_length_then_its_body() -> None:
    data = frame(Abort("r1"))
    assert int.from_bytes(data[:4], "little") == len(data) - 4


def test_nothing_is_sent_after_the_write_side_is_closed() -> None:
    """The servicer aborts streams cancelled at the end of a drain, after the core was told to stop."""
    ours, theirs = socket.socketpair()
    core = BlockingChannel(theirs)

    async def exchange() -> None:
        channel = await AsyncChannel.open(ours)
        channel.send(Abort("before"))
        channel.close_write()
        channel.send(Abort("after"))  # no error, and nothing on the wire
        channel.close()

    try:
        asyncio.run(exchange())
        assert core.receive() == Abort("before")
        assert core.receive() is None
    finally:
        core.close()


def test_events_decoded_from_a_frame_are_not_tracked_by_the_collector() -> None:
    """What a step makes a thousand of stays out of the collector's generations (events.py)."""
    body = frame(Events([("r", StepEvent(tokens=[TokenOutput(7, -0.5, [(7, -0.5)])]))]))[4:]
    decoded = msgspec.msgpack.Decoder(FromCore).decode(body)
    assert isinstance(decoded, Events)
    ((_, event),) = decoded.items
    assert not gc.is_tracked(event) and not gc.is_tracked(event.tokens[0])
    assert event.tokens[0].top == [(7, -0.5)]
