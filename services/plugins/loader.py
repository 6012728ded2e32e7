"""Turn plugins.yaml into a `PluginSet`: resolved classes, validated settings, set up, ready to run.

A set is immutable once built. Hot reload builds a new set beside the old one and swaps; calls
hold the set they started with (`use()`), and the old set closes when its last call ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from clawdbot.services.plugins.base import Plugin, PluginContext
from clawdbot.services.plugins.config import PluginConfigError, PluginEntry, parse_plugins_file
from clawdbot.services.plugins.registry import PluginResolveError, resolve

log = logging.getLogger("clawdbot.plugins")


@dataclass
class LoadedPlugin:
    entry: PluginEntry
    plugin: Plugin[Any]
    source: str
    setup_error: str | None = None  # set when setup failed and on_error is "skip": the plugin sits out

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def kind(self) -> str:
        return self.entry.kind

    @property
    def description(self) -> str:
        return self.entry.description or type(self.plugin).description


def build_plugin(entry: PluginEntry, file: Path, context: PluginContext) -> LoadedPlugin:
    """Resolve the class and validate `config` against its settings model."""
    try:
        resolved = resolve(entry.kind, entry.use)
    except PluginResolveError as exc:
        raise PluginConfigError(file, str(exc), plugin=entry.name, key="use") from exc
    try:
        settings = resolved.cls.settings_model.model_validate(entry.config)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(["config", *(str(part) for part in first["loc"])])
        raise PluginConfigError(file, first["msg"], plugin=entry.name, key=key) from exc
    try:
        plugin = resolved.cls(entry.name, settings, context)
    except TypeError as exc:  # an abstract method of the kind is not implemented
        raise PluginConfigError(
            file, f"{resolved.source} cannot be built: {exc}", plugin=entry.name, key="use"
        ) from exc
    except (ValueError, OSError) as exc:
        raise PluginConfigError(file, str(exc), plugin=entry.name, key="config") from exc
    return LoadedPlugin(entry, plugin, resolved.source)


class PluginSet:
    """The plugins of one version of plugins.yaml, in `order` (declaration order breaks ties)."""

    def __init__(self, file: Path, plugins: list[LoadedPlugin]) -> None:
        self.file = file
        indexed = sorted(enumerate(plugins), key=lambda pair: (pair[1].entry.order, pair[0]))
        self.plugins = [p for _, p in indexed]
        self._users = 0
        self._retired = False
        self._closed = asyncio.Event()

    @property
    def enabled(self) -> list[LoadedPlugin]:
        return [p for p in self.plugins if p.entry.enabled]

    def with_side(self, side: str) -> list[LoadedPlugin]:
        return [p for p in self.plugins if side in p.plugin.sides()]

    def find(self, name: str) -> LoadedPlugin | None:
        return next((p for p in self.plugins if p.name == name), None)

    async def setup(self) -> None:
        """Set up every enabled plugin; one with on_error "skip" that fails sits out, "fail" aborts."""
        for loaded in self.enabled:
            try:
                await loaded.plugin.setup()
            except Exception as exc:
                if loaded.entry.on_error == "fail":
                    await self.close()
                    raise PluginConfigError(
                        self.file, f"setup failed: {exc}", plugin=loaded.name, key="config"
                    ) from exc
                loaded.setup_error = f"setup failed: {type(exc).__name__}: {exc}"
                log.error(
                    "plugin setup failed; it is skipped", extra={"plugin": loaded.name, "error": str(exc)}
                )

    async def close(self) -> None:
        for loaded in self.enabled:
            with contextlib.suppress(Exception):
                await loaded.plugin.close()
        self._closed.set()

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[PluginSet]:
        """Hold this set for one call; a retired set closes when its last holder leaves."""
        self._users += 1
        try:
            yield self
        finally:
            self._users -= 1
            if self._retired and self._users == 0 and not self._closed.is_set():
                await self.close()

    async def retire(self) -> None:
        """No new calls will use this set: close it now if idle, else when the last call ends."""
        self._retired = True
        if self._users == 0 and not self._closed.is_set():
            await self.close()

    @property
    def in_use(self) -> int:
        return self._users


def load_plugin_set(file: Path) -> PluginSet:
    """Parse and build every plugin of the file (disabled ones too, so `check` validates them)."""
    file = file.resolve()
    parsed = parse_plugins_file(file)
    context = PluginContext(base_dir=file.parent, config_file=file)
    return PluginSet(file, [build_plugin(entry, file, context) for entry in parsed.plugins])
