"""Health follows the store's reachability, and a drain is never undone by the store coming back."""

from __future__ import annotations

import asyncio
import time

from grpc_health.v1 import health_pb2

from clawdbot.services.memory.app import build_app
from clawdbot.services.memory.embedded_store import EmbeddedStore
from clawdbot.services.memory.store import Limits
from clawdbot.services.memory.testing import settings_for_tests
from clawdbot.shared.errors import Unavailable
from clawdbot.shared.processes import health_status

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class SwitchableStore(EmbeddedStore):
    """An embedded store whose reachability the test switches (Redis itself is killed in the fault test)."""

    down = False

    async def ping(self) -> None:
        if self.down:
            raise Unavailable("switched off")


async def wait_status(target: str, status: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (now := await health_status(target, "clawdbot.v1.Memory")) != status:
        assert time.monotonic() < deadline, f"health {now}, wanted {status}"
        await asyncio.sleep(0.02)


async def test_health_follows_the_store_and_a_drain_stays_a_drain() -> None:
    store = SwitchableStore(Limits(ttl_seconds=60, max_facts=8))
    store.down = True
    app = build_app(settings_for_tests(None, health_interval_s=0.05), store)
    port = await app.host.start()
    target = f"127.0.0.1:{port}"
    try:
        await app.startup()
        await app.host.set_serving(True)  # what ServiceHost.run does after startup
        assert await health_status(target) == NOT_SERVING  # started while the store is down: waits
        store.down = False
        await wait_status(target, SERVING)
        store.down = True
        await wait_status(target, NOT_SERVING)
        store.down = False
        await wait_status(target, SERVING)
        await app.host.set_serving(False)  # the drain's first step
        store.down = True
        await wait_status(target, NOT_SERVING)
        store.down = False
        await asyncio.sleep(0.3)  # six watcher intervals in which it must not flip back
        assert await health_status(target) == NOT_SERVING
    finally:
        await app.host.stop()
        await app.shutdown()
