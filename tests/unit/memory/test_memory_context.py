"""GetContext's selection as a specification: budget, newest turns first, tool calls never split."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from clawdbot.services.memory.context import select_context
from clawdbot.services.memory.embedded_store import EmbeddedStore
from clawdbot.services.memory.server import MemoryServicer
from clawdbot.services.memory.settings import MemorySettings
from clawdbot.services.memory.store import Limits
from clawdbot.v1 import common_pb2, memory_pb2


def message(i: int, role: str, tokens: int, **fields: Any) -> common_pb2.ChatMessage:
    return common_pb2.ChatMessage(message_id=f"m{i}", role=role, token_count=tokens, **fields)


@st.composite
def conversations(draw: st.DrawFn) -> list[common_pb2.ChatMessage]:
    """User/assistant turns, tool calls answered later (sometimes after other turns, sometimes
    never), and orphan tool results whose call was trimmed away."""
    messages: list[common_pb2.ChatMessage] = []
    pending: list[str] = []
    calls = 0
    for i in range(draw(st.integers(0, 18))):
        tokens = draw(st.integers(0, 40))
        kind = draw(st.sampled_from(["user", "assistant", "call", "result", "result", "orphan"]))
        if kind == "call":
            ids = [f"c{calls + j}" for j in range(draw(st.integers(1, 3)))]
            calls += len(ids)
            pending += ids
            messages.append(
                message(i, "assistant", tokens, tool_calls=[common_pb2.ToolCall(id=c) for c in ids])
            )
        elif kind == "result" and pending:
            call = pending.pop(draw(st.integers(0, len(pending) - 1)))
            messages.append(message(i, "tool", tokens, tool_call_id=call))
        elif kind == "orphan":
            messages.append(message(i, "tool", tokens, tool_call_id=f"trimmed-{i}"))
        else:
            messages.append(message(i, "user" if kind == "user" else "assistant", tokens))
    return messages


def call_index(messages: list[common_pb2.ChatMessage]) -> dict[str, int]:
    return {call.id: i for i, m in enumerate(messages) for call in m.tool_calls}


def reference(messages: list[common_pb2.ChatMessage], start: int, left: int) -> list[int]:
    """Brute force: the longest suffix, closed under call/result and not reaching into turns the
    summary covers (except to complete an exchange), whose tokens fit."""
    calls = call_index(messages)
    usable = [i for i, m in enumerate(messages) if m.role != "tool" or m.tool_call_id in calls]

    def closure(k: int) -> int:
        """The smallest index whose suffix holds k.. and every call of a result in it."""
        while True:
            needed = [
                calls[messages[i].tool_call_id] for i in usable if i >= k and messages[i].role == "tool"
            ]
            lowest = min([k, *needed])
            if lowest == k:
                return k
            k = lowest

    floor = closure(start) if any(i >= start for i in usable) else len(messages)
    best: list[int] = []
    for k in range(len(messages), floor - 1, -1):
        if closure(k) != k:
            continue
        suffix = [i for i in usable if i >= k]
        if sum(messages[i].token_count for i in suffix) <= left:
            best = suffix
    return best


@settings(max_examples=400, deadline=None)
@given(
    messages=conversations(),
    budget=st.integers(0, 200),
    summary_tokens=st.integers(0, 60),
    covers=st.integers(-1, 18),
)
def test_context_fits_the_budget_prefers_the_newest_and_never_splits_a_tool_call(
    messages: list[common_pb2.ChatMessage], budget: int, summary_tokens: int, covers: int
) -> None:
    covered = messages[covers].message_id if 0 <= covers < len(messages) else ""
    summary = memory_pb2.Summary(
        text="older turns" if covers >= 0 else "",
        covers_through_message_id=covered,
        token_count=summary_tokens,
    )
    chosen = select_context(messages, summary, budget)
    got = [int(m.message_id[1:]) for m in chosen.messages]

    # Never over budget, and tokens_used is exactly what was returned.
    summary_cost = summary.token_count if chosen.include_summary else 0
    assert chosen.tokens_used == sum(m.token_count for m in chosen.messages) + summary_cost <= budget
    assert chosen.include_summary == (bool(summary.text) and summary.token_count <= budget)

    # A tool result travels with its call, a call with every result it has; no orphan results.
    calls = call_index(messages)
    picked = set(got)
    for i in got:
        if messages[i].role == "tool":
            assert calls.get(messages[i].tool_call_id) in picked
    for i, m in enumerate(messages):
        if m.role == "tool" and m.tool_call_id in calls and calls[m.tool_call_id] in picked:
            assert i in picked

    # The newest turn that fits is always there, and the selection is the longest stretch that fits.
    left = budget - summary_cost
    start = next(
        (i + 1 for i in range(len(messages) - 1, -1, -1) if covered and messages[i].message_id == covered), 0
    )
    assert got == reference(messages, start, left)

    # Everything after the summary's boundary that was not sent is reported, oldest first.
    omitted = [int(x[1:]) for x in chosen.omitted_message_ids]
    assert omitted == sorted(set(range(start, len(messages))) - picked)


def test_the_newest_exchange_is_dropped_whole_when_it_does_not_fit() -> None:
    messages = [
        message(0, "user", 5),
        message(1, "assistant", 5, tool_calls=[common_pb2.ToolCall(id="c")]),
        message(2, "tool", 30, tool_call_id="c"),
    ]
    chosen = select_context(messages, memory_pb2.Summary(), 20)
    assert (chosen.messages, chosen.omitted_message_ids, chosen.tokens_used) == ([], ["m0", "m1", "m2"], 0)


def test_a_summary_larger_than_the_budget_is_left_out_and_the_turns_get_the_budget() -> None:
    messages = [message(0, "user", 5), message(1, "assistant", 5)]
    summary = memory_pb2.Summary(text="long story", covers_through_message_id="", token_count=50)
    chosen = select_context(messages, summary, 12)
    assert (chosen.include_summary, [m.message_id for m in chosen.messages], chosen.tokens_used) == (
        False,
        ["m0", "m1"],
        10,
    )


def test_an_exchange_across_the_summary_boundary_is_sent_whole() -> None:
    messages = [
        message(0, "assistant", 3, tool_calls=[common_pb2.ToolCall(id="c")]),
        message(1, "tool", 3, tool_call_id="c"),
        message(2, "user", 3),
    ]
    summary = memory_pb2.Summary(text="s", covers_through_message_id="m0", token_count=1)
    chosen = select_context(messages, summary, 100)
    assert [m.message_id for m in chosen.messages] == ["m0", "m1", "m2"]
    assert chosen.omitted_message_ids == []


@settings(max_examples=60, deadline=None)
@given(messages=conversations(), budget=st.integers(0, 200), max_messages=st.integers(1, 20))
def test_get_context_through_the_service_keeps_the_same_promises(
    messages: list[common_pb2.ChatMessage], budget: int, max_messages: int
) -> None:
    """The same properties end to end through the servicer and a store, trimming included."""
    servicer = MemoryServicer(EmbeddedStore(Limits(ttl_seconds=60, max_facts=8)), MemorySettings())
    key = memory_pb2.SessionKey(tenant="acme", session_id="s1")

    async def scenario() -> tuple[memory_pb2.Session, memory_pb2.GetContextResponse]:
        for m in messages:  # one Append per message, as turns arrive
            await servicer.Append(
                memory_pb2.AppendRequest(key=key, messages=[m], max_messages=max_messages), None
            )
        session = await servicer.GetSession(memory_pb2.GetSessionRequest(key=key), None)
        ctx = await servicer.GetContext(memory_pb2.GetContextRequest(key=key, token_budget=budget), None)
        return session, ctx

    if not messages:
        return
    session, ctx = asyncio.run(scenario())
    stored = list(session.messages)
    assert len(stored) == min(len(messages), max_messages)
    assert ctx.tokens_used == sum(m.token_count for m in ctx.messages) <= budget
    got = [stored.index(m) for m in ctx.messages]
    assert got == reference(stored, 0, budget)
    calls = call_index(stored)
    assert all(m.role != "tool" or calls.get(m.tool_call_id) in got for m in ctx.messages)
