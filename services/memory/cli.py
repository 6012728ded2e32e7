"""`clawdbot serve memory`: session memory in Redis (`--redis-url`) or, without one, in-process."""

from __future__ import annotations

from pathlib import Path

import click

from clawdbot.services.memory.settings import DEFAULT_PORT, MemorySettings
from clawdbot.shared.options import common_server_options


@click.command()
@common_server_options(DEFAULT_PORT)
@click.option(
    "--redis-url",
    default=None,
    help="redis://host:port/db; without it the embedded store (one process, not durable).",
)
@click.option(
    "--ttl",
    "ttl_seconds",
    type=float,
    default=None,
    help="Seconds a session lives after its last use (0: forever).",
)
@click.option(
    "--max-messages", type=int, default=None, help="Messages kept per session; older ones are trimmed."
)
@click.option(
    "--health-interval",
    "health_interval_s",
    type=float,
    default=None,
    help="Seconds between store health checks.",
)
def serve(
    config_file: Path | None,
    log_level: str | None,
    metrics_port: int | None,
    port: int | None,
    host: str | None,
    redis_url: str | None,
    ttl_seconds: float | None,
    max_messages: int | None,
    health_interval_s: float | None,
) -> None:
    """Serve clawdbot.v1.Memory (settings: `memory:` in --config, CLAWDBOT_MEMORY_* variables)."""
    from clawdbot.services.memory.app import serve as serve_memory

    settings = MemorySettings.load(
        config_file,
        host=host,
        port=port,
        metrics_port=metrics_port,
        log_level=log_level,
        redis_url=redis_url,
        ttl_seconds=ttl_seconds,
        max_messages=max_messages,
        health_interval_s=health_interval_s,
    )
    serve_memory(settings)
