"""Streamed replies: however the text is cut into deltas, the output is what the whole reply
would give; masked words and terms never leak in pieces; the length limit stops the stream."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clawdbot.services.plugins.loader import PluginSet
from clawdbot.services.plugins.pipeline import postprocess
from clawdbot.services.plugins.streaming import StreamPipeline
from clawdbot.services.plugins.types import ReplyState, Turn

from .conftest import plugin

REPLY = (
    "您的订单SO20261125001已发货，快递员电话13812345678，邮件 zhang.wei@example.com。"
    "We guarantee nothing: this is not the 全网最低价 offer. 价格3999元👍🏽 e\u0301te\u0301 "
    "Card 4111 1111 1111 1111 on file. Guaranteed lowest price claims are banned."
)


def stream(plugin_set: PluginSet, chunks: list[str], language: str = "zh") -> tuple[str, list[str], bool]:
    pipeline = StreamPipeline(
        plugin_set, Turn(tenant="shop", session_id="st", metadata={"language": language})
    )
    out: list[str] = []
    events: list[str] = []
    stopped = False
    for chunk in chunks:
        step = pipeline.feed(chunk)
        out.append(step.text)
        events += [e.type for e in step.events]
        if step.stop:
            stopped = True
            break
    import asyncio

    tail = asyncio.run(pipeline.finish()) if not stopped else None
    if tail is not None:
        out.append(tail.text)
        events += [e.type for e in tail.events]
    return "".join(out), events, stopped


def cut(text: str, sizes: list[int]) -> list[str]:
    chunks, i = [], 0
    for size in sizes:
        if i >= len(text):
            break
        chunks.append(text[i : i + size])
        i += size
    if i < len(text):
        chunks.append(text[i:])
    return chunks


@pytest.fixture(scope="module")
def expected(shop_set: PluginSet) -> str:
    import asyncio

    return asyncio.run(postprocess(shop_set, ReplyState(Turn(metadata={"language": "zh"}), REPLY))).reply


def test_the_whole_reply_is_masked_filtered_and_gets_its_disclaimer(expected: str) -> None:
    assert "138****5678" in expected and "z***@example.com" in expected
    assert "**** **** **** 1111" in expected
    assert "全网最低价" not in expected and "Guaranteed lowest price" not in expected
    assert "SO20261125001" in expected and "We guarantee nothing" in expected
    assert expected.endswith("价格以下单页面为准。")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=120))
def test_any_split_into_deltas_gives_the_same_text(
    shop_set: PluginSet, expected: str, sizes: list[int]
) -> None:
    text, _, stopped = stream(shop_set, cut(REPLY, sizes))
    assert not stopped
    assert text == expected


def test_one_character_deltas_never_show_a_masked_value_or_term(shop_set: PluginSet) -> None:
    pipeline = StreamPipeline(shop_set, Turn(metadata={"language": "en"}))
    sent = ""
    for char in REPLY:
        sent += pipeline.feed(char).text
        for secret in ("1381234", "zhang.wei", "全网最低", "4111 1111 1111 1"):
            assert secret not in sent


def test_the_length_limit_stops_the_stream_at_a_word_boundary(shop_set: PluginSet) -> None:
    long_reply = "The Sony headphones are great. " * 60
    text, events, stopped = stream(shop_set, cut(long_reply, [7] * 400), language="en")
    assert stopped and "truncated" in events
    assert text.endswith("…") and len(text) <= 1201
    assert text[:-1].rstrip().split(" ")[-1] in {"The", "Sony", "headphones", "are", "great."}


def test_a_failing_stream_filter_is_dropped_and_the_text_passes(shop_set: PluginSet) -> None:
    pipeline = StreamPipeline(shop_set, Turn())
    filt = plugin(shop_set, "reply_filter")
    assert filt is not None
    broken = next(f for lp, f in pipeline._filters if lp.name == "reply_filter")

    def explode(delta: str) -> None:
        raise RuntimeError("boom")

    broken.feed = explode
    step = pipeline.feed("hello world ")
    assert any(e.type == "plugin_error" for e in step.events)
    assert "hello" in step.text + pipeline.feed("again ").text
