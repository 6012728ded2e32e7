"""Health that follows the store: NOT_SERVING while Redis is unreachable, SERVING when it is back.

The shared host decides when the process wants to serve (after startup, until the drain); the
watcher decides whether the store can. Health is SERVING only when both agree, so a drain is
never undone by Redis coming back, and a service started while Redis is down waits NOT_SERVING
instead of crash-looping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from clawdbot.services.memory.metrics import STORE_UP
from clawdbot.services.memory.store import MemoryStore
from clawdbot.shared.config import ServiceSettings
from clawdbot.shared.grpc_server import ServiceHost

log = logging.getLogger("clawdbot.memory.health")


class StoreAwareHost(ServiceHost):
    """A ServiceHost whose SERVING also needs the store to be reachable."""

    def __init__(self, name: str, settings: ServiceSettings) -> None:
        super().__init__(name, settings)
        self.wants_serving = False
        self.store_healthy = True

    async def set_serving(self, serving: bool) -> None:
        self.wants_serving = serving
        await super().set_serving(serving and self.store_healthy)

    async def set_store_healthy(self, healthy: bool) -> None:
        self.store_healthy = healthy
        await super().set_serving(self.wants_serving and healthy)


class StoreHealthWatcher:
    """Pings the store every `interval_s` and reports each change of reachability to the host."""

    def __init__(self, store: MemoryStore, host: StoreAwareHost, interval_s: float, timeout_s: float) -> None:
        self.store = store
        self.host = host
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None

    async def check(self) -> bool:
        try:
            await asyncio.wait_for(self.store.ping(), self.timeout_s)
        except Exception as exc:  # unreachable, timed out, or answering errors: not able to serve
            healthy = False
            reason = str(exc) or type(exc).__name__
        else:
            healthy, reason = True, ""
        STORE_UP.labels(self.store.backend).set(1 if healthy else 0)
        if healthy != self.host.store_healthy:
            if healthy:
                log.warning("store reachable again: serving", extra={"backend": self.store.backend})
            else:
                log.error(
                    "store unreachable: not serving", extra={"backend": self.store.backend, "reason": reason}
                )
            await self.host.set_store_healthy(healthy)
        return healthy

    async def start(self) -> None:
        """One check now (so startup knows the store's state), then one every interval."""
        await self.check()
        self._task = asyncio.create_task(self._loop(), name="memory-health-watcher")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except Exception:  # a bug here must not silently stop the watching
                log.exception("health check failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
