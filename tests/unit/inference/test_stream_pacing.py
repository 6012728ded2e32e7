"""How long a Generate stream's next message waits: pacing by open streams, and the burst hold."""

from __future__ import annotations

from clawdbot.services.inference.server import BURST_CALLS, BURST_WINDOW, InferenceServicer


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
