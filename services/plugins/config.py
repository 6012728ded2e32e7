"""The plugins.yaml model: which plugin instances run, in what order, and with what settings.

Every error names the file, the plugin and the key, because the person reading it is
editing that file right now.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from clawdbot.services.plugins.kinds import KINDS


class PluginConfigError(ValueError):
    """plugins.yaml is wrong; the message says where (file, plugin, key) and why."""

    def __init__(self, file: Path | str, message: str, *, plugin: str | None = None, key: str | None = None):
        where = [str(file)]
        if plugin is not None:
            where.append(f"plugin {plugin!r}")
        if key is not None:
            where.append(f"key {key!r}")
        super().__init__(f"{': '.join(where)}: {message}")
        self.file = str(file)
        self.plugin = plugin
        self.key = key


class PluginEntry(BaseModel):
    """One plugin instance as declared in plugins.yaml."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal[
        "knowledge_graph",
        "retrieval",
        "multimodal",
        "tool",
        "intent",
        "entity",
        "input_guard",
        "pii",
        "output_filter",
        "response_cache",
        "handoff",
        "language",
    ]
    # Absent: the kind's built-in. "module.path:Class", or the name of a `clawdbot.plugins` entry point.
    use: str | None = None
    enabled: bool = True
    order: int = 100
    timeout_ms: int = Field(default=1000, gt=0, le=120_000)
    on_error: Literal["skip", "fail"] = "skip"
    description: str = ""
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("config", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value


class PluginsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    plugins: list[PluginEntry] = Field(default_factory=list)


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse_plugins_file(path: Path) -> PluginsFile:
    """Read and validate the file's structure (each plugin's `config` is checked when it is built)."""
    if not path.is_file():
        raise PluginConfigError(path, "no such file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PluginConfigError(path, f"not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PluginConfigError(path, "the top level must be a mapping with a `plugins:` list")
    if not isinstance(raw.get("plugins", []), list):
        raise PluginConfigError(path, "`plugins` must be a list", key="plugins")
    names: set[str] = set()
    for index, item in enumerate(raw.get("plugins") or []):
        label = (
            item.get("name") if isinstance(item, dict) and isinstance(item.get("name"), str) else f"#{index}"
        )
        try:
            entry = PluginEntry.model_validate(item)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise PluginConfigError(path, first["msg"], plugin=label, key=_location(first["loc"])) from exc
        if entry.name in names:
            raise PluginConfigError(path, "the name is used twice", plugin=entry.name, key="name")
        names.add(entry.name)
    try:
        return PluginsFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise PluginConfigError(path, first["msg"], key=_location(first["loc"])) from exc


__all__ = ["KINDS", "PluginConfigError", "PluginEntry", "PluginsFile", "parse_plugins_file"]
