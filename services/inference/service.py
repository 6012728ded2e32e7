"""Wiring: settings -> engine (its own process, or this one) -> gRPC host. The only place that knows all three."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY

from clawdbot.services.inference.engine_client import CoreMetricsCollector, EngineClient
from clawdbot.services.inference.server import InferenceServicer
from clawdbot.services.inference.settings import InferenceSettings
from clawdbot.shared.grpc_server import ServiceHost
from clawdbot.v1 import inference_pb2_grpc

if TYPE_CHECKING:  # the gRPC process imports torch only when the engine runs in it
    from clawdbot.services.inference.engine import Engine

log = logging.getLogger("clawdbot.inference")
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds before each new core after one died; the last repeats


class InferenceService:
    """The host with health NOT_SERVING until the model is loaded and warmed.

    By default the engine runs in an engine core process (`engine_core.py`) and this process only
    serves gRPC. If the core dies (a CUDA fault, the OOM killer), the streams it ran end with
    UNAVAILABLE, health turns NOT_SERVING, and a new core is started and warmed; health turns
    SERVING again when it is ready. `engine_process: false` runs the engine in this process instead.
    """

    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings
        self.host = ServiceHost("inference", settings)
        self.engine: Engine | EngineClient | None = None
        self.core_restarts = 0
        self.servicer = InferenceServicer(
            stream_interval=settings.stream_interval_ms / 1000,
            stream_pacing=settings.stream_pacing_us / 1e6,
            burst_hold=settings.stream_burst_hold_ms / 1000,
        )
        self.host.add_service(
            "clawdbot.v1.Inference",
            lambda server: inference_pb2_grpc.add_InferenceServicer_to_server(self.servicer, server),
        )
        self._collector: CoreMetricsCollector | None = None
        self._restarting: asyncio.Task[None] | None = None
        self._shutting_down = False

    async def startup(self) -> None:
        if self.settings.engine_process:
            await self._start_core()
        else:
            await self._start_in_process()

    async def _start_core(self) -> None:
        client = await EngineClient.spawn(self.settings, on_exit=self._core_exited)
        self.engine = client
        if self._collector is None:
            self._collector = CoreMetricsCollector(client)
            REGISTRY.register(self._collector)
        self._collector.client = client
        self.servicer.bind(client, client.info, client.limits)
        log.info(
            "model ready",
            extra={
                "model": client.info.name,
                "quantization": client.info.quantization,
                "engine_pid": client.process.pid,
            },
        )

    async def _start_in_process(self) -> None:
        from clawdbot.services.inference.builder import build_engine, engine_limits, warm_up

        engine, info = await asyncio.to_thread(build_engine, self.settings)
        engine.start()
        await warm_up(engine)
        self.engine = engine
        self.servicer.bind(engine, info, engine_limits(engine))
        log.info(
            "model ready",
            extra={"model": info.name, "quantization": info.quantization, "kv_blocks": engine.num_blocks},
        )

    def _core_exited(self, code: int) -> None:
        """Called on the event loop when the core died while we were not stopping it."""
        self.servicer.unbind("the engine is restarting after a fault")
        if not self._shutting_down:
            self._restarting = asyncio.create_task(self._restart(code))

    async def _restart(self, code: int) -> None:
        await self.host.set_serving(False)
        for attempt in itertools.count():
            delay = RESTART_DELAYS[min(attempt, len(RESTART_DELAYS) - 1)]
            log.error("engine core died; starting a new one", extra={"exit_code": code, "in_seconds": delay})
            await asyncio.sleep(delay)
            if self.host.stopping or self._shutting_down:
                return
            try:
                await self._start_core()
            except Exception:
                log.exception("engine core restart failed")
                continue
            self.core_restarts += 1
            if not (self.host.stopping or self._shutting_down):
                await self.host.set_serving(True)
            return

    async def shutdown(self) -> None:
        self._shutting_down = True
        if self._restarting is not None:
            self._restarting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restarting
        if isinstance(self.engine, EngineClient):
            await self.engine.stop()
        elif self.engine is not None:
            await asyncio.to_thread(self.engine.stop)
        if self._collector is not None:
            REGISTRY.unregister(self._collector)
            self._collector = None

    async def run(self) -> None:
        await self.host.run(self.startup, self.shutdown)
