"""InvokeTool: one tool call the model made, run by the tool plugin that offers the tool."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from clawdbot.services.plugins.kinds import ToolPlugin
from clawdbot.services.plugins.loader import LoadedPlugin, PluginSet
from clawdbot.services.plugins.pipeline import Outcome, PluginFailed, call_plugin
from clawdbot.services.plugins.types import Event, Turn
from clawdbot.shared.errors import NotFound


@dataclass
class ToolCallResult:
    content: str
    is_error: bool
    plugin: str
    outcomes: list[Outcome] = field(default_factory=list)


def _tool_owner(plugins: PluginSet, name: str) -> LoadedPlugin | None:
    for loaded in plugins.enabled:
        offered = isinstance(loaded.plugin, ToolPlugin) and loaded.setup_error is None
        if offered and any(tool.name == name for tool in loaded.plugin.tools()):  # type: ignore[attr-defined]
            return loaded
    return None


async def invoke_tool(plugins: PluginSet, turn: Turn, name: str, arguments_json: str) -> ToolCallResult:
    """Run one tool call the model made; what goes wrong becomes an error result the model can read."""
    loaded = _tool_owner(plugins, name)
    if loaded is None:
        raise NotFound(f"no enabled tool plugin offers a tool named {name!r}", field="call.function.name")
    try:
        arguments = json.loads(arguments_json) if arguments_json.strip() else {}
    except json.JSONDecodeError as exc:
        return ToolCallResult(json.dumps({"error": f"arguments are not JSON: {exc}"}), True, loaded.name)
    if not isinstance(arguments, dict):
        return ToolCallResult(json.dumps({"error": "arguments must be a JSON object"}), True, loaded.name)
    plugin = loaded.plugin
    assert isinstance(plugin, ToolPlugin)
    outcomes: list[Outcome] = []
    events: list[Event] = []

    async def work() -> Any:
        return await plugin.invoke(name, arguments, turn)

    try:
        outcome = await call_plugin(loaded, "invoke_tool", work, outcomes, events)
    except PluginFailed as exc:
        return ToolCallResult(json.dumps({"error": str(exc)}), True, loaded.name, outcomes)
    return ToolCallResult(outcome.content, outcome.is_error, loaded.name, outcomes)
