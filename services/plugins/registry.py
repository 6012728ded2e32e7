"""Where a plugin class comes from: a built-in, a `module:Class` path, or a `clawdbot.plugins` entry point.

Built-ins are named by import path and imported only when a file uses them, so a plugins.yaml
without OCR never imports pytesseract.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from clawdbot.services.plugins.base import Plugin
from clawdbot.services.plugins.kinds import KIND_INTERFACES

ENTRY_POINT_GROUP = "clawdbot.plugins"

BUILTINS: dict[str, str] = {
    "knowledge_graph": "clawdbot.services.plugins.builtin.knowledge_graph:TripleGraph",
    "retrieval": "clawdbot.services.plugins.builtin.retrieval:Bm25Retrieval",
    "multimodal": "clawdbot.services.plugins.builtin.multimodal:ImageAnalyzer",
    "tool": "clawdbot.services.plugins.builtin.tool:DeclaredTools",
    "intent": "clawdbot.services.plugins.builtin.intent:RulesAndExamples",
    "entity": "clawdbot.services.plugins.builtin.entity:PatternSlots",
    "input_guard": "clawdbot.services.plugins.builtin.input_guard:PatternGuard",
    "pii": "clawdbot.services.plugins.builtin.pii:PiiMasker",
    "output_filter": "clawdbot.services.plugins.builtin.output_filter:ReplyFilter",
    "response_cache": "clawdbot.services.plugins.builtin.response_cache:AnswerCache",
    "handoff": "clawdbot.services.plugins.builtin.handoff:HumanHandoff",
    "language": "clawdbot.services.plugins.builtin.language:LinguaLanguage",
}


class PluginResolveError(ValueError):
    """The `use:` of a plugin names nothing loadable, or something that is not a plugin of its kind."""


@dataclass(frozen=True)
class Resolved:
    cls: type[Plugin[Any]]
    source: str  # "builtin", "module:Class" or "entry-point NAME (dist)"


def import_path(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise PluginResolveError(f"{path!r} is not of the form 'module.path:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginResolveError(f"cannot import module {module_name!r}: {exc}") from exc
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise PluginResolveError(f"module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    return target


def plugin_entry_points() -> dict[str, EntryPoint]:
    """The installed `clawdbot.plugins` entry points by name (read afresh: installs may change)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def resolve(kind: str, use: str | None) -> Resolved:
    """The class for a plugin of `kind` declared with `use` (None: the kind's built-in)."""
    if use is None:
        obj, source = import_path(BUILTINS[kind]), "builtin"
    elif ":" in use:
        obj, source = import_path(use), use
    else:
        found = plugin_entry_points().get(use)
        if found is None:
            known = sorted(plugin_entry_points())
            raise PluginResolveError(
                f"no {ENTRY_POINT_GROUP!r} entry point named {use!r} is installed (installed: {known})"
            )
        try:
            obj = found.load()
        except Exception as exc:  # a broken third-party package must not hide which plugin it was
            raise PluginResolveError(f"entry point {use!r} ({found.value}) fails to load: {exc}") from exc
        dist = found.dist.name if found.dist is not None else "?"
        source = f"entry-point {use} ({found.value} from {dist})"
    interface = KIND_INTERFACES[kind]
    if not (isinstance(obj, type) and issubclass(obj, Plugin)):
        raise PluginResolveError(f"{source} is not a Plugin class")
    if not issubclass(obj, interface):
        raise PluginResolveError(
            f"{source} is a {obj.kind or 'plugin'} plugin, not a {kind} plugin "
            f"(it must subclass {interface.__module__}.{interface.__name__})"
        )
    return Resolved(obj, source)
