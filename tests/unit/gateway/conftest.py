"""A gateway app on a real port in front of the scripted fake services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from clawdbot.gateway.app import create_app
from clawdbot.gateway.settings import GatewaySettings
from clawdbot.shared.processes import free_port

from .fakes import Script, start_fakes


@dataclass
class Edge:
    url: str
    script: Script
    http: aiohttp.ClientSession
    settings: GatewaySettings

    async def post(self, path: str, body: Any, **kwargs: Any) -> tuple[int, Any]:
        async with self.http.post(self.url + path, json=body, **kwargs) as resp:
            return resp.status, await resp.json()


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def gateway_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
async def edge(script: Script, gateway_overrides: dict[str, Any]) -> AsyncIterator[Edge]:
    server, target = await start_fakes(script)
    port = free_port()
    settings = GatewaySettings(
        http_port=port,
        tokenizer_target=target,
        inference_target=target,
        plugins_target=target,
        memory_target=target,
        **gateway_overrides,
    )
    runner = web.AppRunner(create_app(settings), handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        yield Edge(f"http://127.0.0.1:{port}", script, http, settings)
    await runner.cleanup()
    await server.stop(0)
