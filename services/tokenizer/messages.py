"""Proto chat messages and tool specs -> the dicts chat templates expect (OpenAI's shape)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from clawdbot.shared.errors import InvalidArgument
from clawdbot.v1 import common_pb2

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


def message_text(message: common_pb2.ChatMessage) -> str:
    """The text a template sees: `content`, or the text parts joined (images become a marker)."""
    if not message.parts:
        return message.content
    pieces = []
    for part in message.parts:
        if part.HasField("text"):
            pieces.append(part.text)
        elif part.HasField("image_url"):
            pieces.append("[image]")
    return "\n".join(pieces)


def _arguments(raw: str, field: str) -> Any:
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"tool call arguments are not valid JSON: {exc.msg}", field=field) from exc


def to_template_messages(messages: Sequence[common_pb2.ChatMessage]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if m.role not in ROLES:
            raise InvalidArgument(
                f"unknown role {m.role!r}; expected one of {sorted(ROLES)}", field=f"messages[{i}].role"
            )
        item: dict[str, Any] = {"role": m.role, "content": message_text(m)}
        if m.name:
            item["name"] = m.name
        if m.tool_calls:
            item["tool_calls"] = [
                {
                    "id": tc.id,
                    "type": tc.type or "function",
                    "function": {
                        "name": tc.function.name,
                        "arguments": _arguments(
                            tc.function.arguments, f"messages[{i}].tool_calls[{j}].function.arguments"
                        ),
                    },
                }
                for j, tc in enumerate(m.tool_calls)
            ]
        if m.tool_call_id:
            item["tool_call_id"] = m.tool_call_id
        out.append(item)
    return out


def to_template_tools(tools: Sequence[common_pb2.ToolSpec]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        if not tool.function.name:
            raise InvalidArgument("a tool needs a function name", field=f"tools[{i}].function.name")
        try:
            parameters = json.loads(tool.function.parameters_json) if tool.function.parameters_json else {}
        except json.JSONDecodeError as exc:
            raise InvalidArgument(
                f"not valid JSON: {exc.msg}", field=f"tools[{i}].function.parameters_json"
            ) from exc
        function: dict[str, Any] = {
            "name": tool.function.name,
            "description": tool.function.description,
            "parameters": parameters,
        }
        out.append({"type": tool.type or "function", "function": function})
    return out
