"""protobuf <-> the plugins' plain data types, in one place so plugins never see protobuf."""

from __future__ import annotations

import json
from typing import Any

from clawdbot.services.plugins.pipeline import Outcome
from clawdbot.services.plugins.types import ContextItem, Event, ImageInput, Message, ToolDef, Turn
from clawdbot.shared.errors import InvalidArgument
from clawdbot.v1 import common_pb2, plugins_pb2


def turn_from_pb(turn: plugins_pb2.TurnContext) -> Turn:
    return Turn(
        tenant=turn.tenant,
        session_id=turn.session_id,
        user=turn.user,
        turn_id=turn.turn_id,
        facts=dict(turn.facts),
        metadata=dict(turn.metadata),
    )


def message_text(message: common_pb2.ChatMessage) -> str:
    """`content`, or the text parts joined when a multimodal message left `content` empty."""
    if message.content:
        return message.content
    return "\n".join(part.text for part in message.parts if part.WhichOneof("part") == "text")


def message_from_pb(message: common_pb2.ChatMessage) -> Message:
    images = tuple(
        ImageInput(part.image_url.url, index)
        for index, part in enumerate(p for p in message.parts if p.WhichOneof("part") == "image_url")
    )
    return Message(message.role, message_text(message), images)


def tool_from_pb(tool: common_pb2.ToolSpec, index: int) -> ToolDef:
    try:
        parameters: Any = json.loads(tool.function.parameters_json) if tool.function.parameters_json else {}
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"not JSON: {exc}", field=f"tools[{index}].function.parameters_json") from exc
    return ToolDef(tool.function.name, tool.function.description, parameters)


def tool_to_pb(tool: ToolDef) -> common_pb2.ToolSpec:
    return common_pb2.ToolSpec(
        type="function",
        function=common_pb2.FunctionSpec(
            name=tool.name, description=tool.description, parameters_json=json.dumps(tool.parameters)
        ),
    )


def event_to_pb(event: Event) -> common_pb2.Event:
    return common_pb2.Event(type=event.type, source=event.source, message=event.message, data=event.data)


def context_to_pb(item: ContextItem) -> common_pb2.ContextBlock:
    return common_pb2.ContextBlock(
        text=item.text,
        source=item.source,
        plugin=item.plugin,
        title=item.title,
        score=item.score,
        answer=item.answer,
        key_facts=item.key_facts,
    )


def outcome_to_pb(outcome: Outcome) -> plugins_pb2.PluginOutcome:
    return plugins_pb2.PluginOutcome(
        plugin=outcome.plugin,
        kind=outcome.kind,
        status=outcome.status,
        error=outcome.error,
        latency_ms=outcome.latency_ms,
    )


def rewritten_user_message(original: common_pb2.ChatMessage, text: str) -> common_pb2.ChatMessage:
    """The new user message with its text replaced; image parts are kept, text parts become one."""
    message = common_pb2.ChatMessage()
    message.CopyFrom(original)
    message.content = text
    if original.parts:
        del message.parts[:]
        if text:
            message.parts.add(text=text)
        for part in original.parts:
            if part.WhichOneof("part") == "image_url":
                message.parts.add().CopyFrom(part)
    return message
