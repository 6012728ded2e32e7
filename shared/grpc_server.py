"""The one grpc.aio server bootstrap every service uses.

A service builds a `ServiceHost`, adds its servicers, and calls `run()` with a startup hook:
the port opens at once with health NOT_SERVING, the hook loads what the service needs (a model,
a Redis pool), health turns SERVING, and SIGTERM/SIGINT turn it NOT_SERVING again and drain the
calls in flight for `grace_seconds` before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from clawdbot.shared import event_loop
from clawdbot.shared.config import ServiceSettings
from clawdbot.shared.interceptors import RpcInterceptor
from clawdbot.shared.logs import configure_logging
from clawdbot.shared.metrics import start_metrics_endpoint
from clawdbot.shared.telemetry import server_interceptors, setup_tracing

log = logging.getLogger("clawdbot.server")

Hook = Callable[[], Awaitable[None]]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def server_options(settings: ServiceSettings) -> list[tuple[str, Any]]:
    """Message size limits and keepalive, the same on every service."""
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.so_reuseport", 0),
    ]


class ServiceHost:
    """Runs one service process: gRPC server, health, reflection, metrics, tracing, drain."""

    def __init__(
        self, name: str, settings: ServiceSettings, *, extra_interceptors: Iterable[Any] = ()
    ) -> None:
        self.name = name
        self.settings = settings
        self.health = health_aio.HealthServicer()
        self._registrations: list[tuple[str, Callable[[grpc.aio.Server], None]]] = []
        self._extra_interceptors = list(extra_interceptors)
        self._server: grpc.aio.Server | None = None
        self._stop = asyncio.Event()
        self.port: int | None = None
        self.serving = False

    def add_service(self, full_name: str, register: Callable[[grpc.aio.Server], None]) -> None:
        """`full_name` like "clawdbot.v1.Tokenizer"; `register` adds the servicer to the server."""
        self._registrations.append((full_name, register))

    @property
    def service_names(self) -> list[str]:
        return [name for name, _ in self._registrations]

    async def start(self) -> int:
        """Open the port with every service NOT_SERVING; returns the bound port."""
        configure_logging(self.name, self.settings.log_level, self.settings.log_format)
        setup_tracing(
            self.name, self.settings.otel_exporter, self.settings.otel_endpoint, self.settings.otel_file
        )
        if self.settings.metrics_port is not None:
            start_metrics_endpoint(self.settings.metrics_port, self.settings.host)
        interceptors = [*server_interceptors(), RpcInterceptor(self.name), *self._extra_interceptors]
        server = grpc.aio.server(interceptors=interceptors, options=server_options(self.settings))
        for _, register in self._registrations:
            register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [
            *self.service_names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ]
        reflection.enable_server_reflection(names, server)
        address = f"{self.settings.host}:{self.settings.port}"
        port = server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"{self.name}: cannot bind {address}")
        await self.set_serving(False)
        await server.start()
        self._server = server
        self.port = port
        loop = type(asyncio.get_running_loop()).__module__.partition(".")[0]  # uvloop or asyncio
        log.info(
            "listening",
            extra={
                "address": f"{self.settings.host}:{port}",
                "services": self.service_names,
                "event_loop": loop,
            },
        )
        return port

    async def set_serving(self, serving: bool) -> None:
        """Health of the whole process ("") and of each service together."""
        status = SERVING if serving else NOT_SERVING
        self.serving = serving
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """A stop was asked for (signal or `request_stop`): the process is draining or about to."""
        return self._stop.is_set()

    async def stop(self) -> None:
        """NOT_SERVING, then let calls in flight finish within the grace period."""
        if self._server is None:
            return
        await self.set_serving(False)
        log.info("draining", extra={"grace_seconds": self.settings.grace_seconds})
        await self._server.stop(self.settings.grace_seconds)
        self._server = None
        log.info("stopped")

    async def run(self, startup: Hook | None = None, shutdown: Hook | None = None) -> None:
        """Start, run `startup`, serve until SIGTERM/SIGINT, drain, run `shutdown`."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        try:
            if startup is not None:
                await startup()
            if not self._stop.is_set():
                await self.set_serving(True)
                log.info("serving", extra={"port": self.port})
            await self._stop.wait()
        finally:
            await self.stop()
            if shutdown is not None:
                await shutdown()


def run_service(host: ServiceHost, startup: Hook | None = None, shutdown: Hook | None = None) -> None:
    """Blocking entry point for `clawdbot serve <service>`."""
    event_loop.run(host.run(startup, shutdown), host.settings.event_loop)
