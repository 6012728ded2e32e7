"""Wiring of one memory process: the store the settings choose, the servicer, health that follows the store."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from clawdbot.services.memory.embedded_store import EmbeddedStore
from clawdbot.services.memory.health import StoreAwareHost, StoreHealthWatcher
from clawdbot.services.memory.server import MemoryServicer
from clawdbot.services.memory.settings import MemorySettings
from clawdbot.services.memory.store import Limits, MemoryStore
from clawdbot.shared.grpc_server import run_service
from clawdbot.v1 import memory_pb2_grpc

SERVICE_NAME = "clawdbot.v1.Memory"
log = logging.getLogger("clawdbot.memory")


def create_store(settings: MemorySettings) -> MemoryStore:
    """Redis when a URL is configured, else the embedded store."""
    limits = Limits(ttl_seconds=settings.ttl_seconds, max_facts=settings.max_facts)
    if settings.redis_url:
        from clawdbot.services.memory.redis_store import RedisStore, connect

        return RedisStore(connect(settings), limits)
    return EmbeddedStore(limits)


@dataclass
class MemoryApp:
    """The host, the store and the watcher of one process, with the hooks `ServiceHost.run` calls."""

    settings: MemorySettings
    store: MemoryStore
    host: StoreAwareHost
    watcher: StoreHealthWatcher

    async def startup(self) -> None:
        await self.watcher.start()
        log.info(
            "memory store ready" if self.host.store_healthy else "memory store not reachable yet",
            extra={"backend": self.store.backend, "ttl_seconds": self.settings.ttl_seconds},
        )

    async def shutdown(self) -> None:
        await self.watcher.stop()
        await self.store.close()


def build_app(settings: MemorySettings, store: MemoryStore | None = None) -> MemoryApp:
    store = store or create_store(settings)
    host = StoreAwareHost("memory", settings)
    servicer = MemoryServicer(store, settings)
    host.add_service(
        SERVICE_NAME, lambda server: memory_pb2_grpc.add_MemoryServicer_to_server(servicer, server)
    )
    watcher = StoreHealthWatcher(store, host, settings.health_interval_s, settings.health_timeout_s)
    return MemoryApp(settings, store, host, watcher)


def serve(settings: MemorySettings) -> None:
    """Blocking: serve until SIGTERM, then drain and close the store."""
    app = build_app(settings)
    run_service(app.host, app.startup, app.shutdown)
