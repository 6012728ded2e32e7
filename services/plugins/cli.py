"""`clawdbot serve plugins` and `clawdbot plugins list|check`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import click

from clawdbot.shared.options import common_server_options

log = logging.getLogger("clawdbot.plugins")
DEFAULT_PORT = 50053


@click.command()
@common_server_options(DEFAULT_PORT)
@click.option(
    "--plugins",
    "plugins_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="plugins.yaml to load (reloaded on SIGHUP) [default: settings' plugins_file].",
)
def serve(
    config_file: Path | None,
    log_level: str | None,
    metrics_port: int | None,
    port: int | None,
    host: str | None,
    plugins_file: Path | None,
) -> None:
    """Serve clawdbot.v1.Plugins: the plugins of plugins.yaml around each turn."""
    from clawdbot.services.plugins.manager import PluginManager
    from clawdbot.services.plugins.server import PluginsService
    from clawdbot.services.plugins.settings import PluginsSettings
    from clawdbot.shared.grpc_server import ServiceHost, run_service
    from clawdbot.v1 import plugins_pb2_grpc

    settings = PluginsSettings.load(
        config_file,
        host=host,
        port=port,
        metrics_port=metrics_port,
        log_level=log_level,
        plugins_file=plugins_file,
    )
    manager = PluginManager(settings.plugins_file)
    service = PluginsService(manager)
    host_ = ServiceHost("plugins", settings)
    host_.add_service(
        "clawdbot.v1.Plugins", lambda s: plugins_pb2_grpc.add_PluginsServicer_to_server(service, s)
    )
    reloads: set[asyncio.Task[Any]] = set()

    def on_sighup() -> None:
        task = asyncio.get_running_loop().create_task(manager.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    async def startup() -> None:
        await manager.start()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, on_sighup)
        log.info(
            "plugins loaded",
            extra={"file": str(settings.plugins_file), "count": len(manager.current.enabled)},
        )

    async def shutdown() -> None:
        await manager.close()

    run_service(host_, startup, shutdown)


@click.group()
def plugins() -> None:
    """Inspect and validate plugins.yaml files."""


def _default_file() -> Path:
    from clawdbot.services.plugins.settings import EXAMPLE_PLUGINS_FILE

    return EXAMPLE_PLUGINS_FILE


@plugins.command("list")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--target", default=None, help="Ask a running plugin service (host:port) instead of reading a file."
)
def list_command(file: Path | None, target: str | None) -> None:
    """Show the plugins a file declares (or a running service has loaded), and what is installed."""
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=200)  # pipes get whole names
    table = Table("order", "name", "kind", "enabled", "timeout", "on_error", "source")
    if target is not None:
        for info in asyncio.run(_list_remote(target)):
            table.add_row(
                str(info.order),
                info.name,
                info.kind,
                str(info.enabled),
                f"{info.timeout_ms} ms",
                info.on_error,
                info.source,
            )
        console.print(table)
        return
    from clawdbot.services.plugins.config import PluginConfigError
    from clawdbot.services.plugins.loader import load_plugin_set
    from clawdbot.services.plugins.registry import BUILTINS, plugin_entry_points

    path = file or _default_file()
    try:
        loaded = load_plugin_set(path)
    except PluginConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    for p in loaded.plugins:
        e = p.entry
        table.add_row(
            str(e.order), e.name, e.kind, str(e.enabled), f"{e.timeout_ms} ms", e.on_error, p.source
        )
    console.print(f"[bold]{loaded.file}[/bold]")
    console.print(table)
    console.print("built-in kinds: " + ", ".join(sorted(BUILTINS)))
    eps = plugin_entry_points()
    console.print(
        "entry points (clawdbot.plugins): "
        + (", ".join(f"{n} = {ep.value}" for n, ep in sorted(eps.items())) or "none")
    )


async def _list_remote(target: str) -> list[Any]:
    import grpc

    from clawdbot.v1 import plugins_pb2, plugins_pb2_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        reply = await plugins_pb2_grpc.PluginsStub(channel).ListPlugins(
            plugins_pb2.ListPluginsRequest(), timeout=10
        )
    return list(reply.plugins)


@plugins.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--setup/--no-setup", default=True, help="Also load each plugin's data files and models.")
def check_command(file: Path, setup: bool) -> None:
    """Validate FILE: structure, plugin classes and each plugin's config; exit 1 naming the first error."""
    from clawdbot.services.plugins.config import PluginConfigError
    from clawdbot.services.plugins.loader import load_plugin_set

    async def run() -> int:
        plugin_set = load_plugin_set(file)
        if setup:
            for p in plugin_set.enabled:
                p.entry = p.entry.model_copy(update={"on_error": "fail"})  # every setup error is reported
            await plugin_set.setup()
            await plugin_set.close()
        return len(plugin_set.plugins)

    try:
        count = asyncio.run(run())
    except PluginConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{file}: OK ({count} plugins)")
