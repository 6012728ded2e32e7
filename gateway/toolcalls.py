"""Tool calls in the model's text, in the bundled chat template's format:
`<tool_call>{"name": NAME, "arguments": {...}}</tool_call>`.

While a reply could still turn out to be a tool call its text is held back, so a client never
sees the raw tags as content; what follows the first `<tool_call>` is parsed at the end of the
reply into OpenAI `tool_calls`.
"""

from __future__ import annotations

import json
import re
import uuid

from clawdbot.v1 import common_pb2

OPEN = "<tool_call>"
_BLOCK = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)


class ToolCallScanner:
    """Feed deltas; emits content text until a `<tool_call>` starts, then captures the rest."""

    def __init__(self) -> None:
        self._held = ""
        self.captured = ""
        self.capturing = False

    def feed(self, delta: str) -> str:
        if self.capturing:
            self.captured += delta
            return ""
        text = self._held + delta
        at = text.find(OPEN)
        if at >= 0:
            self.capturing = True
            self.captured = text[at:]
            self._held = ""
            return text[:at]
        keep = 0
        for k in range(min(len(text), len(OPEN) - 1), 0, -1):
            if OPEN.startswith(text[-k:]):
                keep = k
                break
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        text, self._held = self._held, ""
        return text

    def tool_calls(self) -> list[common_pb2.ToolCall]:
        """The complete, well-formed calls in the captured text (malformed ones are dropped)."""
        return parse_tool_calls(self.captured)


def parse_tool_calls(text: str) -> list[common_pb2.ToolCall]:
    calls: list[common_pb2.ToolCall] = []
    for match in _BLOCK.finditer(text):
        try:
            body = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            continue
        arguments = body.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        calls.append(
            common_pb2.ToolCall(
                id=f"call_{uuid.uuid4().hex[:24]}",
                type="function",
                function=common_pb2.FunctionCall(name=body["name"], arguments=arguments),
            )
        )
    return calls
