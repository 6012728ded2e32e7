"""The `clawdbot` command line.

Commands are imported only when run, so `clawdbot --help` is instant and a service's heavy
imports (torch, transformers) load only in the process that serves it. Each service owns its
command in `<service>/cli.py`; this file only says where they are.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from clawdbot import __version__


class LazyGroup(click.Group):
    """A group whose subcommands live in other modules: name -> ("module:attribute", short help)."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        path, _ = self.lazy[cmd_name]
        module_name, attr = path.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise click.ClickException(f"{path} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self.lazy[name][1]) for name in sorted(self.lazy)]
        rows += [(name, cmd.get_short_help_str(60)) for name, cmd in sorted(self.commands.items())]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(sorted(rows))


SERVE_COMMANDS = {
    "tokenizer": (
        "clawdbot.services.tokenizer.cli:serve",
        "Text <-> token ids, chat templates, streaming detokenization.",
    ),
    "inference": (
        "clawdbot.services.inference.cli:serve",
        "The continuous-batching engine (CPU or CUDA, INT4 or 16-bit).",
    ),
    "plugins": ("clawdbot.services.plugins.cli:serve", "The twelve plugin kinds from plugins.yaml."),
    "memory": ("clawdbot.services.memory.cli:serve", "Session memory in Redis or the embedded store."),
    "gateway": ("clawdbot.gateway.cli:serve", "OpenAI-compatible REST, the web chat page and gRPC Chat."),
}

TOP_COMMANDS = {
    "serve": ("clawdbot.shared.cli:serve", "Run one service of the mesh."),
    "up": ("clawdbot.gateway.cli:up", "Start the whole mesh behind Envoy and wait until it is ready."),
    "quantize": ("clawdbot.services.inference.cli:quantize", "Quantize a model folder to INT4 and save it."),
    "plugins": ("clawdbot.services.plugins.cli:plugins", "List or check a plugins.yaml."),
    "eval": (
        "clawdbot.gateway.eval_cli:eval_command",
        "Score conversations from a JSONL file through the mesh.",
    ),
}


@click.group(cls=LazyGroup, lazy=SERVE_COMMANDS)
def serve() -> None:
    """Run one service of the mesh as a gRPC server.

    Every service takes --port, --host and --config (a YAML file), and reads CLAWDBOT_<SERVICE>_*
    environment variables; health is NOT_SERVING until it is ready, SIGTERM drains it.
    """


@click.group(cls=LazyGroup, lazy=TOP_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="clawdbot")
def cli() -> None:
    """Clawdbot: a self-hosted chatbot served as a gRPC microservice mesh.

    \b
    Quick start:
      clawdbot up                      the whole mesh on the bundled demo model
      clawdbot serve tokenizer --port 50051
      clawdbot quantize SRC DST        INT4 copy of a model folder
    """


def main() -> None:
    cli(prog_name="clawdbot")


if __name__ == "__main__":
    main()
