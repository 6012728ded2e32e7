"""The gateway process: gRPC Chat (through the shared ServiceHost: health, reflection, drain,
tracing) and the aiohttp REST app in one event loop, over one set of upstream channels.

Health turns SERVING once the HTTP port listens too; SIGTERM stops the HTTP side after the gRPC
drain, so streams in flight on either face get the grace period.
"""

from __future__ import annotations

import logging

from aiohttp import web

from clawdbot.gateway.app import create_app, limiter_for
from clawdbot.gateway.grpc_chat import ChatService
from clawdbot.gateway.pipeline import ChatPipeline
from clawdbot.gateway.settings import GatewaySettings
from clawdbot.gateway.upstreams import Upstreams
from clawdbot.shared.grpc_server import ServiceHost
from clawdbot.shared.telemetry import setup_tracing
from clawdbot.v1 import chat_pb2_grpc

log = logging.getLogger("clawdbot.gateway")


async def serve_gateway(settings: GatewaySettings) -> None:
    setup_tracing("gateway", settings.otel_exporter, settings.otel_endpoint, settings.otel_file)
    host = ServiceHost("gateway", settings)
    upstreams = Upstreams(settings)
    pipeline = ChatPipeline(upstreams, settings)
    limiter = limiter_for(settings)  # one set of counters for both faces
    chat = ChatService(pipeline, settings, limiter)
    host.add_service(
        "clawdbot.v1.Chat", lambda server: chat_pb2_grpc.add_ChatServicer_to_server(chat, server)
    )
    app = create_app(settings, upstreams, limiter)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)

    async def startup() -> None:
        await runner.setup()
        site = web.TCPSite(runner, settings.http_bind_host(), settings.http_port, reuse_address=True)
        await site.start()
        log.info("http listening", extra={"address": f"{settings.http_bind_host()}:{settings.http_port}"})

    async def shutdown() -> None:
        await runner.cleanup()
        await pipeline.drain()
        await limiter.counter.close()
        await upstreams.close()

    await host.run(startup, shutdown)
