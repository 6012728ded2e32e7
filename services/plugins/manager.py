"""The active plugin set and its hot reload.

SIGHUP builds the new set completely (parse, resolve, validate, set up) before swapping it in,
so a broken edit leaves the old set serving and a turn in flight finishes on the set it began with.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from clawdbot.services.plugins.loader import PluginSet, load_plugin_set
from clawdbot.services.plugins.metrics import PLUGIN_RELOADS, PLUGINS_LOADED

log = logging.getLogger("clawdbot.plugins")


class PluginManager:
    def __init__(self, file: Path | None) -> None:
        self.file = file
        self._current = PluginSet(Path("<none>"), [])
        self._lock = asyncio.Lock()
        self.generation = 0
        self.last_error: str | None = None

    @property
    def current(self) -> PluginSet:
        return self._current

    async def load(self) -> PluginSet:
        """Build and set up the set from the file; raises on any error (the old set stays active)."""
        if self.file is None:
            return PluginSet(Path("<none>"), [])
        built = await asyncio.to_thread(load_plugin_set, self.file)
        await built.setup()
        return built

    async def start(self) -> None:
        self._current = await self.load()
        self.generation = 1
        PLUGINS_LOADED.set(len(self._current.enabled))

    async def reload(self) -> bool:
        """Swap in a fresh set from the file; False (and the old set kept) when the file is wrong."""
        async with self._lock:
            try:
                fresh = await self.load()
            except Exception as exc:
                self.last_error = str(exc)
                PLUGIN_RELOADS.labels("error").inc()
                log.error("plugins reload failed; keeping the running set", extra={"error": str(exc)})
                return False
            old, self._current = self._current, fresh
            self.generation += 1
            self.last_error = None
            PLUGIN_RELOADS.labels("ok").inc()
            PLUGINS_LOADED.set(len(fresh.enabled))
            log.info(
                "plugins reloaded",
                extra={"generation": self.generation, "plugins": [p.name for p in fresh.enabled]},
            )
        await old.retire()
        return True

    async def close(self) -> None:
        await self._current.retire()
