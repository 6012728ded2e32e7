"""The session summary: turns that fell out of the memory budget, folded into a short text that
the next turns' system message carries, so a long conversation keeps its gist in O(1) tokens.

Extractive (clipped lines of the dropped turns) rather than model-written: deterministic, free,
and fine for the facts customer service needs (order numbers, what was asked). A model-written
summary can replace it through the same SetSummary call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import grpc

from clawdbot.gateway.prompt import text_of
from clawdbot.gateway.upstreams import Upstreams
from clawdbot.v1 import common_pb2, memory_pb2, tokenizer_pb2

log = logging.getLogger("clawdbot.gateway.summary")

SUMMARY_CHARS = 1200  # the summary keeps about this much text, the newest
SUMMARY_LINE_CHARS = 160


def extractive_summary(previous: str, dropped: Iterable[common_pb2.ChatMessage]) -> str:
    """The earlier summary plus one clipped `role: text` line per dropped message."""
    lines = [previous] if previous else []
    for message in dropped:
        text = " ".join(text_of(message).split())
        if not text:
            continue
        if len(text) > SUMMARY_LINE_CHARS:
            text = text[: SUMMARY_LINE_CHARS - 1] + "…"
        lines.append(f"{message.role}: {text}")
    return "\n".join(lines)[-SUMMARY_CHARS:]


async def refresh_summary(
    up: Upstreams, key: memory_pb2.SessionKey, context: memory_pb2.GetContextResponse
) -> None:
    """Fold the turns GetContext left out into the session's summary (after the reply is sent)."""
    omitted = set(context.omitted_message_ids)
    try:
        session = await up.memory.GetSession(memory_pb2.GetSessionRequest(key=key))
        dropped = [m for m in session.messages if m.message_id in omitted]
        if not dropped:
            return
        text = extractive_summary(session.summary.text or context.summary.text, dropped)
        counted = await up.tokenizer.CountTokens(tokenizer_pb2.CountTokensRequest(texts=[text]))
        summary = memory_pb2.Summary(
            text=text,
            covers_through_message_id=dropped[-1].message_id,
            token_count=counted.counts[0] if counted.counts else len(text) // 2,
        )
        await up.memory.SetSummary(memory_pb2.SetSummaryRequest(key=key, summary=summary))
    except grpc.aio.AioRpcError as exc:  # a summary is an optimisation; the turn already succeeded
        log.warning("summary refresh failed", extra={"code": exc.code().name})
