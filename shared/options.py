"""Command-line options every `clawdbot serve <service>` command shares."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def common_server_options(default_port: int) -> Callable[[F], F]:
    """--host, --port, --metrics-port, --config, --log-level: the same on every service."""

    def decorate(func: F) -> F:
        options = [
            click.option(
                "--config",
                "config_file",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                help="YAML settings file (default: $CLAWDBOT_CONFIG).",
            ),
            click.option("--log-level", default=None, help="DEBUG, INFO, WARNING, ..."),
            click.option(
                "--metrics-port", type=int, default=None, help="Serve Prometheus /metrics on this port."
            ),
            click.option(
                "--port",
                type=int,
                default=None,
                show_default=True,
                help=f"gRPC port [default: {default_port}].",
            ),
            click.option("--host", default=None, help="Address to bind [default: 127.0.0.1]."),
        ]
        for option in options:
            func = option(func)
        return func

    return decorate
