"""GetContext's selection: the newest turns that fit a token budget, as a pure function.

A "unit" is what may not be split: an assistant message that calls tools together with the tool
messages answering those calls (and anything between them); every other message is a unit alone.
Tool messages whose call is not stored (trimmed away) are never sent: a result without its call is
invalid for every chat template we feed. Selection walks units from the newest back and stops at
the first that does not fit, so the context is always a contiguous, most recent stretch of the
conversation; what it left out (after the summary's boundary) is reported so the caller can fold
it into the summary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from clawdbot.v1 import common_pb2, memory_pb2


@dataclass(frozen=True)
class ContextSelection:
    messages: list[common_pb2.ChatMessage]  # oldest first
    include_summary: bool
    omitted_message_ids: list[str]  # oldest first
    tokens_used: int


def group_units(messages: Sequence[common_pb2.ChatMessage]) -> tuple[list[list[int]], list[int]]:
    """Indices grouped into unsplittable units (each a contiguous range, in order), and orphan tool results."""
    units: list[list[int]] = []
    orphans: list[int] = []
    unit_of_call: dict[str, int] = {}
    for i, msg in enumerate(messages):
        if msg.role == "tool":
            owner = unit_of_call.get(msg.tool_call_id)
            if owner is None:
                orphans.append(i)
                continue
            # Everything from the call to its result becomes one unit, so units stay contiguous.
            merged = [j for unit in units[owner:] for j in unit] + [i]
            units[owner:] = [merged]
            unit_of_call = {call: min(u, owner) for call, u in unit_of_call.items()}
            continue
        units.append([i])
        if msg.role == "assistant":
            for call in msg.tool_calls:
                unit_of_call[call.id] = len(units) - 1
    return units, orphans


def boundary(messages: Sequence[common_pb2.ChatMessage], covers_through_message_id: str) -> int:
    """Index of the first message the summary does not cover (0 when it covers none still stored)."""
    if covers_through_message_id:
        for i in range(len(messages) - 1, -1, -1):
            if messages[i].message_id == covers_through_message_id:
                return i + 1
    return 0


def select_context(
    messages: Sequence[common_pb2.ChatMessage], summary: memory_pb2.Summary, token_budget: int
) -> ContextSelection:
    """The summary (if its tokens fit) plus the newest units that fit the rest of the budget.

    The budget covers the returned messages and the summary together: the summary stands for
    every older turn, so it is reserved first; a summary larger than the whole budget is left out.
    """
    start = boundary(messages, summary.covers_through_message_id)
    has_summary = bool(summary.text)
    include_summary = has_summary and summary.token_count <= token_budget
    left = token_budget - (summary.token_count if include_summary else 0)
    units, orphans = group_units(messages)
    # A unit that straddles the boundary is sent whole: a call is never cut from its result.
    candidates = [unit for unit in units if unit[-1] >= start]
    taken: list[list[int]] = []  # newest first
    for unit in reversed(candidates):
        cost = sum(messages[i].token_count for i in unit)
        if cost > left:
            break
        left -= cost
        taken.append(unit)
    chosen = [i for unit in reversed(taken) for i in unit]
    picked = set(chosen)
    after_boundary = {i for unit in candidates for i in unit if i >= start} | {
        i for i in orphans if i >= start
    }
    omitted = sorted(after_boundary - picked)
    used = sum(messages[i].token_count for i in chosen) + (summary.token_count if include_summary else 0)
    return ContextSelection(
        messages=[messages[i] for i in chosen],
        include_summary=include_summary,
        omitted_message_ids=[messages[i].message_id for i in omitted],
        tokens_used=used,
    )
