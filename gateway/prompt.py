"""What the model reads: the conversation assembled from the client's messages, the stored
history, and what the plugins added (instructions, context with sources, facts, a summary).

Everything the plugins and memory contribute goes into one system message at the top, because
small chat models follow one system message far better than several scattered ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from clawdbot.v1 import common_pb2

SYSTEM_ROLES = ("system", "developer")
INTERNAL_FACT_PREFIX = "_"  # facts the plugins keep for themselves (the last intent): not for the model


def split_system(
    messages: Sequence[common_pb2.ChatMessage],
) -> tuple[list[common_pb2.ChatMessage], list[common_pb2.ChatMessage]]:
    """(leading system/developer messages, the rest)."""
    head: list[common_pb2.ChatMessage] = []
    for i, message in enumerate(messages):
        if message.role not in SYSTEM_ROLES:
            return head, list(messages[i:])
        head.append(message)
    return head, []


def system_text(
    client_system: Iterable[common_pb2.ChatMessage],
    instructions: Iterable[str],
    context: Iterable[common_pb2.ContextBlock],
    facts: Mapping[str, str],
    summary: str,
) -> str:
    parts = [m.content for m in client_system if m.content]
    parts += [i for i in instructions if i]
    blocks = [
        f"[{n}] {b.title + ': ' if b.title else ''}{b.text}" + (f" (source: {b.source})" if b.source else "")
        for n, b in enumerate(context, 1)
        if b.text
    ]
    if blocks:
        parts.append("Use this context when it helps; cite the sources:\n" + "\n".join(blocks))
    shown = {k: v for k, v in facts.items() if not k.startswith(INTERNAL_FACT_PREFIX)}
    if shown:
        parts.append(
            "Known facts about this conversation:\n" + "\n".join(f"- {k}: {v}" for k, v in shown.items())
        )
    if summary:
        parts.append("Summary of the earlier conversation:\n" + summary)
    return "\n\n".join(parts)


def prompt_messages(
    client_system: Sequence[common_pb2.ChatMessage],
    history: Sequence[common_pb2.ChatMessage],
    new_messages: Sequence[common_pb2.ChatMessage],
    *,
    instructions: Iterable[str] = (),
    context: Iterable[common_pb2.ContextBlock] = (),
    facts: Mapping[str, str] | None = None,
    summary: str = "",
) -> list[common_pb2.ChatMessage]:
    """System message (if any), stored history, then this turn's messages."""
    text = system_text(client_system, instructions, context, facts or {}, summary)
    head = [common_pb2.ChatMessage(role="system", content=text)] if text else []
    return [*head, *history, *new_messages]


def text_of(message: common_pb2.ChatMessage) -> str:
    """The message's text: `content`, or its text parts when only parts were given."""
    if message.content:
        return message.content
    return "".join(p.text for p in message.parts if p.WhichOneof("part") == "text")
