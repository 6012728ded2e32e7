"""`clawdbot serve tokenizer`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from clawdbot.shared.options import common_server_options


@click.command("tokenizer")
@common_server_options(default_port=50051)
@click.option(
    "--model",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Model folder with tokenizer.json [default: the bundled demo model].",
)
def serve(config_file: Path | None, model: Path | None, **options: Any) -> None:
    """Serve clawdbot.v1.Tokenizer: encode/decode, chat templates, streaming detokenization."""
    from clawdbot.services.tokenizer.server import serve as run
    from clawdbot.services.tokenizer.settings import TokenizerSettings
    from clawdbot.shared import event_loop

    settings = TokenizerSettings.load(config_file, model=model, **options)
    event_loop.run(run(settings), settings.event_loop)
