"""Token texts for logprobs: inference knows only ids, OpenAI's shape wants each token's text."""

from __future__ import annotations

from collections.abc import Sequence

from clawdbot.gateway.upstreams import Upstreams
from clawdbot.v1 import common_pb2, tokenizer_pb2


async def name_tokens(
    up: Upstreams, positions: Sequence[common_pb2.PositionLogprobs]
) -> list[common_pb2.PositionLogprobs]:
    """Copies of `positions` with `token` filled in for the chosen and the top ids (one Decode call)."""
    named = []
    for p in positions:
        copy = common_pb2.PositionLogprobs()
        copy.CopyFrom(p)
        named.append(copy)
    entries = [e for p in named for e in (p.chosen, *p.top)]
    if not entries:
        return named
    decoded = await up.tokenizer.Decode(
        tokenizer_pb2.DecodeRequest(sequences=[tokenizer_pb2.TokenIds(ids=[e.token_id]) for e in entries])
    )
    for entry, text in zip(entries, decoded.texts, strict=False):
        entry.token = text
    return named
