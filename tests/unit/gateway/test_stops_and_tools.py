"""Stop strings and tool-call tags on the text side, however the text is split into deltas."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from clawdbot.gateway.stops import StopMatcher
from clawdbot.gateway.toolcalls import ToolCallScanner, parse_tool_calls


def run_matcher(deltas: list[str], stops: list[str]) -> tuple[str, bool]:
    matcher = StopMatcher(stops)
    out = ""
    for delta in deltas:
        out += matcher.feed(delta)
        if matcher.stopped:
            break
    out += matcher.flush()
    return out, matcher.stopped


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(text[last:p])
        last = p
    pieces.append(text[last:])
    return pieces


TEXTS = st.text(alphabet="ab<>/ 停止", max_size=40)
STOPS = st.lists(st.text(alphabet="ab<>/停止", min_size=1, max_size=4), max_size=3)


@given(text=TEXTS, stops=STOPS, cuts=st.lists(st.integers(0, 60), max_size=10))
def test_whatever_the_split_no_stop_is_emitted_and_the_text_ends_at_one(
    text: str, stops: list[str], cuts: list[int]
) -> None:
    got, stopped = run_matcher(split(text, cuts), stops)
    assert text.startswith(got)
    assert not any(s in got for s in stops)  # a stop string never reaches the client
    assert stopped == any(s in text for s in stops)
    if stopped:
        assert any(text.startswith(s, len(got)) for s in stops)
    else:
        assert got == text  # held-back prefixes that did not complete are released


@given(text=TEXTS, stops=STOPS)
def test_one_delta_cuts_before_the_leftmost_stop(text: str, stops: list[str]) -> None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    assert run_matcher([text], stops)[0] == (text[: min(hits)] if hits else text)


@given(text=TEXTS, stops=STOPS)
def test_token_by_token_cuts_at_the_first_stop_to_complete(text: str, stops: list[str]) -> None:
    """As an engine sees it: the first stop whose last character arrives wins (the leftmost of
    those that complete together)."""
    ends = [(j + len(s), j) for s in stops for j in range(len(text)) if text.startswith(s, j)]
    expected = text[: min(ends)[1]] if ends else text
    assert run_matcher(list(text), stops)[0] == expected


def test_a_prefix_is_held_back_until_decided() -> None:
    matcher = StopMatcher(["</end>"])
    assert matcher.feed("hello </e") == "hello "
    assert matcher.feed("nd> bye") == ""
    assert matcher.stopped


def test_no_stops_passes_text_through() -> None:
    matcher = StopMatcher([])
    assert matcher.feed("abc") == "abc" and matcher.flush() == ""


@given(cuts=st.lists(st.integers(0, 120), max_size=12))
def test_tool_call_text_is_captured_not_emitted(cuts: list[int]) -> None:
    text = 'Let me check. <tool_call>{"name": "get_order", "arguments": {"id": "A-1"}}</tool_call>'
    scanner = ToolCallScanner()
    shown = "".join(scanner.feed(d) for d in split(text, cuts)) + scanner.flush()
    assert shown == "Let me check. "
    (call,) = scanner.tool_calls()
    assert call.function.name == "get_order" and json.loads(call.function.arguments) == {"id": "A-1"}
    assert call.id.startswith("call_")


def test_text_that_only_looks_like_a_tag_start_is_released() -> None:
    scanner = ToolCallScanner()
    assert scanner.feed("a <tool") == "a "
    assert scanner.feed("box> b") == "<toolbox> b"
    assert scanner.tool_calls() == []


def test_malformed_calls_are_dropped() -> None:
    assert parse_tool_calls("<tool_call>{not json}</tool_call>") == []
    assert parse_tool_calls('<tool_call>{"arguments": {}}</tool_call>') == []
    (call,) = parse_tool_calls('<tool_call>{"name": "f", "arguments": "{\\"x\\": 1}"}</tool_call>')
    assert call.function.arguments == '{"x": 1}'
